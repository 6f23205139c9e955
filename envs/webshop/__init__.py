"""WebShop: find and buy the product an instruction describes on a text-only web store.

Two backends share one interface (`envs.base.Env`) and one prompt (`envs.webshop.prompts`):
- `envs.webshop.engine.BuiltinWebShop`: a seeded catalogue of invented products with BM25 search,
  WebShop's pages, actions and reward formula; no download.
- `envs.webshop.real.RealWebShop`: the WebShop project's own text environment from a user's checkout.

This module only holds the keyword rules that pick the teacher's skill file (the paper's "KM" rule);
it imports nothing heavy, so `envs.skills` can use it cheaply.
"""

from __future__ import annotations

import re

SKILL_CATEGORIES: tuple[str, ...] = ("beauty", "electronics", "fashion", "food", "home")

# Product nouns per category: the nouns of the built-in catalogue plus the common product words of
# the real benchmark's five departments (beauty, electronics, fashion, grocery, furniture/home).
CATEGORY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "beauty": (
        "shampoo", "conditioner", "moisturizer", "lipstick", "lip", "nail", "polish", "makeup",
        "lotion", "serum", "perfume", "fragrance", "mascara", "eyeliner", "eyeshadow", "foundation",
        "concealer", "skin", "face", "hair", "beard", "razor", "toothbrush", "toothpaste", "wig",
        "cosmetic", "cosmetics", "cream", "sunscreen", "deodorant", "soap", "brush",
    ),
    "electronics": (
        "earbuds", "headphones", "headset", "charger", "cable", "hdmi", "usb", "speaker", "bluetooth",
        "drive", "bank", "battery", "batteries", "camera", "laptop", "tablet", "phone", "monitor",
        "keyboard", "mouse", "router", "adapter", "tv", "television", "projector", "microphone",
        "remote", "electronics", "wireless", "streaming",
    ),
    "fashion": (
        "shoes", "shoe", "sneakers", "boots", "sandals", "t-shirt", "shirt", "hoodie", "sweatshirt",
        "jeans", "pants", "shorts", "dress", "skirt", "jacket", "coat", "sweater", "socks", "sunglasses",
        "hat", "cap", "leggings", "blouse", "underwear", "bra", "belt", "watch", "jewelry", "necklace",
        "men's", "women's", "clothing",
    ),
    "food": (
        "coffee", "tea", "protein", "chocolate", "snack", "snacks", "trail", "nuts", "oil", "sauce",
        "candy", "cookies", "chips", "cereal", "jerky", "seasoning", "spice", "honey", "beans",
        "gluten", "keto", "grocery", "gourmet", "drink", "juice", "flour", "pasta", "bar", "bars",
    ),
    "home": (
        "towel", "towels", "pillow", "pillows", "candle", "candles", "sheet", "sheets", "bed",
        "blanket", "curtain", "curtains", "rug", "lamp", "furniture", "table", "chair", "sofa",
        "storage", "basket", "clock", "shelf", "mirror", "kitchen", "cabinet", "mattress", "desk",
        "stool", "decor", "ottoman", "bathroom",
    ),
}

_WORD = re.compile(r"[a-z0-9][a-z0-9'\-]*")
_WHICH_OR = re.compile(r"\bwhich\b.*\bor\b", re.DOTALL)
_FOR = re.compile(r"\bfor\b")


def asks_to_compare(goal: str) -> bool:
    """The released rule for WebShop's `comparison` skill category: the goal asks "which ... or ..."
    (the words in that order) and has no "for" (a goal "for" someone or something names a use instead)."""
    text = str(goal).lower()
    return bool(_WHICH_OR.search(text)) and not _FOR.search(text)


def skill_category(task_description: str) -> str:
    """Map a shopping instruction to one of SKILL_CATEGORIES by counting product nouns.

    Only the product part of the instruction is read (before " with " options and the price clause)
    because option values ("scent: vanilla", "color: black") say nothing about the department.
    The category with most keyword hits wins; ties go to the earlier category in SKILL_CATEGORIES;
    an instruction with no hit falls back to "home", the broadest department.
    """
    text = str(task_description).lower()
    product_part = re.split(r"\bwith \w[\w ]*:|, and price lower than", text, maxsplit=1)[0]
    words = _WORD.findall(product_part)
    counts = {name: sum(word in keywords for word in words) for name, keywords in CATEGORY_KEYWORDS.items()}
    best = max(SKILL_CATEGORIES, key=lambda name: (counts[name], -SKILL_CATEGORIES.index(name)))
    return best if counts[best] > 0 else "home"
