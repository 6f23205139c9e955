"""A seeded product catalogue and synthetic shopping goals for the built-in WebShop.

Products carry the fields WebShop's reward reads (title, description, bullet points, attributes,
options, price, category path, search query, title nouns), so the reward formula runs unchanged.
Goals are made the way WebShop makes its synthetic goals: one instruction per product (its type and
some of its attributes), one goal per combination of the product's option values, and a price limit
drawn from the next multiples of $10 above the product's price.

Wording rules that keep the reward honest: option values never occur inside their product's text
(WebShop counts a purchased option as matched when its value appears in the title, features or
description), and values of one option are never fuzzy-equal to each other (see the tests).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

# (category, type phrase, article, type nouns, WebShop-style category path, attribute pool,
#  option pools). The type phrase doubles as the product's search "query" (WebShop keeps the query
#  that found each product, and a purchase with the goal's query counts as the right type).
PRODUCT_TYPES = [
    ("beauty", "shampoo", "a", ("shampoo",), "Beauty & Personal Care › Hair Care › Shampoo",
     ("sulfate free", "paraben free", "for dry hair", "color safe", "cruelty free", "natural ingredients"),
     {"size": ("8 fl oz", "12 fl oz", "16 fl oz", "32 fl oz"), "scent": ("lavender", "coconut", "rosemary mint", "unscented")}),
    ("beauty", "face moisturizer", "a", ("face", "moisturizer"), "Beauty & Personal Care › Skin Care › Face › Moisturizers",
     ("oil free", "fragrance free", "for sensitive skin", "hyaluronic acid", "spf 30", "non comedogenic"),
     {"size": ("1.7 oz", "2.5 oz", "3.4 oz")}),
    ("beauty", "lipstick", "a", ("lipstick",), "Beauty & Personal Care › Makeup › Lips › Lipstick",
     ("long lasting", "matte finish", "cruelty free", "vegan", "hydrating formula"),
     {"color": ("ruby", "nude", "coral", "plum", "berry")}),
    ("beauty", "nail polish", "a", ("nail", "polish"), "Beauty & Personal Care › Foot, Hand & Nail Care › Nail Polish",
     ("quick dry", "chip resistant", "non toxic", "high gloss", "vegan"),
     {"color": ("cherry", "lilac", "teal", "gold", "silver")}),
    ("beauty", "makeup brush set", "a", ("makeup", "brush", "set"), "Beauty & Personal Care › Tools & Accessories › Makeup Brushes",
     ("synthetic bristles", "cruelty free", "travel size", "easy to clean", "soft"),
     {"color": ("rose gold", "black", "champagne")}),
    ("beauty", "body lotion", "a", ("body", "lotion"), "Beauty & Personal Care › Skin Care › Body › Lotions",
     ("shea butter", "fragrance free", "for dry skin", "non greasy", "natural ingredients"),
     {"size": ("8 fl oz", "16 fl oz", "20 fl oz"), "scent": ("coconut", "unscented", "citrus", "almond")}),
    ("electronics", "wireless earbuds", "some", ("earbuds",), "Electronics › Headphones › Earbud Headphones",
     ("noise cancelling", "bluetooth 5.3", "water resistant", "long battery life", "fast charging", "built in microphone"),
     {"color": ("black", "white", "navy", "graphite")}),
    ("electronics", "phone charger", "a", ("phone", "charger"), "Electronics › Cell Phones & Accessories › Chargers",
     ("fast charging", "usb c", "20 watt", "compact design", "overheat protection"),
     {"color": ("black", "white"), "cable length": ("3 ft", "6 ft", "10 ft")}),
    ("electronics", "hdmi cable", "an", ("hdmi", "cable"), "Electronics › Accessories & Supplies › Cables › HDMI Cables",
     ("4k", "high speed", "gold plated", "braided", "ethernet support"),
     {"cable length": ("3 ft", "6 ft", "10 ft", "15 ft")}),
    ("electronics", "bluetooth speaker", "a", ("speaker",), "Electronics › Portable Audio & Video › Portable Speakers",
     ("waterproof", "portable", "long battery life", "deep bass", "hands free calling"),
     {"color": ("black", "teal", "orange", "camo")}),
    ("electronics", "usb flash drive", "a", ("usb", "flash", "drive"), "Electronics › Computers & Accessories › Data Storage › USB Flash Drives",
     ("usb 3.0", "metal casing", "keychain design", "high speed", "plug and play"),
     {"capacity": ("32gb", "64gb", "128gb", "256gb")}),
    ("electronics", "power bank", "a", ("power", "bank"), "Electronics › Cell Phones & Accessories › Portable Power Banks",
     ("fast charging", "usb c", "10000mah", "led display", "slim design"),
     {"color": ("black", "white", "pink")}),
    ("fashion", "running shoes", "some", ("shoes",), "Clothing, Shoes & Jewelry › Men › Shoes › Athletic › Running",
     ("breathable mesh", "rubber sole", "lightweight", "arch support", "slip resistant"),
     {"size": ("7", "8", "9", "10", "11"), "color": ("black", "white", "grey", "navy")}),
    ("fashion", "t-shirt", "a", ("t-shirt",), "Clothing, Shoes & Jewelry › Women › Clothing › Tops, Tees & Blouses › T-Shirts",
     ("100% cotton", "short sleeve", "crew neck", "machine washable", "relaxed fit"),
     {"size": ("small", "medium", "large", "x-large"), "color": ("black", "white", "heather grey", "olive")}),
    ("fashion", "hoodie", "a", ("hoodie",), "Clothing, Shoes & Jewelry › Men › Clothing › Fashion Hoodies & Sweatshirts",
     ("fleece lined", "pullover", "kangaroo pocket", "machine washable", "relaxed fit"),
     {"size": ("small", "medium", "large", "x-large"), "color": ("black", "charcoal", "burgundy", "forest")}),
    ("fashion", "jeans", "some", ("jeans",), "Clothing, Shoes & Jewelry › Women › Clothing › Jeans",
     ("slim fit", "stretch denim", "high waist", "button closure", "five pocket"),
     {"size": ("28w x 30l", "30w x 32l", "32w x 32l", "34w x 34l"), "color": ("dark wash", "light wash", "black")}),
    ("fashion", "sunglasses", "some", ("sunglasses",), "Clothing, Shoes & Jewelry › Men › Accessories › Sunglasses",
     ("polarized lenses", "uv400 protection", "lightweight frame", "unisex"),
     {"color": ("black", "tortoise", "gold")}),
    ("fashion", "socks", "some", ("socks",), "Clothing, Shoes & Jewelry › Men › Clothing › Socks",
     ("cushioned sole", "moisture wicking", "cotton blend", "arch support"),
     {"size": ("medium", "large"), "color": ("black", "white", "assorted")}),
    ("food", "coffee beans", "some", ("coffee", "beans"), "Grocery & Gourmet Food › Beverages › Coffee › Whole Coffee Beans",
     ("whole bean", "medium roast", "organic", "fair trade", "single origin"),
     {"size": ("12 ounce", "2 pound", "5 pound"), "flavor": ("original", "french vanilla", "hazelnut", "mocha")}),
    ("food", "green tea", "some", ("tea",), "Grocery & Gourmet Food › Beverages › Tea › Green",
     ("organic", "unsweetened", "individually wrapped", "non gmo", "loose leaf"),
     {"size": ("20 count", "50 count", "100 count"), "flavor": ("jasmine", "mint", "lemon", "original")}),
    ("food", "protein bar", "a", ("protein", "bar"), "Grocery & Gourmet Food › Snack Foods › Bars › Protein",
     ("gluten free", "low sugar", "high protein", "keto friendly", "non gmo"),
     {"size": ("12 count", "24 count"), "flavor": ("chocolate chip", "peanut butter", "cookie dough", "birthday cake")}),
    ("food", "dark chocolate", "some", ("chocolate",), "Grocery & Gourmet Food › Candy & Chocolate › Chocolate Bars",
     ("sugar free", "organic", "fair trade", "70% cacao", "dairy free"),
     {"size": ("3.5 ounce", "7 ounce", "12 ounce"), "flavor": ("sea salt", "almond", "orange", "raspberry")}),
    ("food", "trail mix", "some", ("trail", "mix"), "Grocery & Gourmet Food › Snack Foods › Trail Mix",
     ("gluten free", "no added sugar", "high protein", "individually wrapped", "non gmo"),
     {"size": ("10 ounce", "26 ounce", "40 ounce"), "flavor": ("sweet and salty", "tropical", "original", "cranberry")}),
    ("food", "olive oil", "some", ("olive", "oil"), "Grocery & Gourmet Food › Pantry Staples › Oils › Olive",
     ("extra virgin", "cold pressed", "organic", "non gmo", "first harvest"),
     {"size": ("500 ml", "750 ml", "1 liter")}),
    ("home", "bath towel", "a", ("bath", "towel"), "Home & Kitchen › Bath › Towels › Bath Towels",
     ("100% cotton", "quick dry", "highly absorbent", "machine washable", "plush"),
     {"size": ("set of 2", "set of 4", "set of 6"), "color": ("white", "grey", "navy", "sage")}),
    ("home", "throw pillow", "a", ("throw", "pillow"), "Home & Kitchen › Bedding › Decorative Pillows › Throw Pillows",
     ("hidden zipper", "machine washable", "velvet", "down alternative", "decorative"),
     {"size": ("18 x 18 inch", "20 x 20 inch"), "color": ("mustard", "blush", "charcoal", "ivory")}),
    ("home", "scented candle", "a", ("candle",), "Home & Kitchen › Home Décor › Candles",
     ("soy wax", "long burning", "lead free", "hand poured", "natural"),
     {"size": ("8 oz", "14 oz"), "scent": ("lavender", "vanilla", "sea salt", "sandalwood", "eucalyptus")}),
    ("home", "bed sheet set", "a", ("bed", "sheet", "set"), "Home & Kitchen › Bedding › Sheets & Pillowcases › Sheet Sets",
     ("deep pocket", "microfiber", "wrinkle free", "breathable", "hypoallergenic"),
     {"size": ("twin", "full", "queen", "king"), "color": ("white", "grey", "navy", "sage")}),
    ("home", "storage basket", "a", ("storage", "basket"), "Home & Kitchen › Storage & Organization › Baskets",
     ("collapsible", "with handles", "woven", "foldable", "stackable"),
     {"size": ("small", "medium", "large"), "color": ("natural", "grey", "white")}),
    ("home", "wall clock", "a", ("wall", "clock"), "Home & Kitchen › Home Décor › Clocks › Wall Clocks",
     ("silent movement", "easy to read", "large numbers", "modern design"),
     {"size": ("10 inch", "12 inch", "14 inch"), "color": ("black", "white", "walnut")}),
]

BRANDS = ("Lumora", "Vexa", "Nordin", "Calder", "Brisa", "Orvia", "Kestrel", "Halden", "Mirel", "Tovan",
          "Quilla", "Sabo", "Ferro", "Ulmo", "Zenit", "Pavo", "Corvin", "Elsa", "Ravik", "Ombra")
LINES = ("Classic", "Pro", "Essential", "Plus", "Everyday", "Studio", "Prime", "Select", "Pure", "Active",
         "Nova", "Urban")
BENEFITS = ("designed for daily use", "a dependable choice", "simple to use", "built to last",
            "a thoughtful gift", "quality checked before shipping")
REVIEW_LINES = ("works as described", "good value for the price", "arrived quickly", "would buy again",
                "not quite what i expected", "my second purchase of this item")
INSTRUCTIONS = ("i am looking for {article} {noun} that is {attrs}",
                "i need {article} {noun}, {attrs}",
                "find me {article} {noun} that is {attrs}",
                "i want to buy {article} {noun}, it should be {attrs}")
PRICE_STEPS = [10.0 * i for i in range(1, 100)]


@dataclass(frozen=True)
class Product:
    """One catalogue item with the fields WebShop's pages and reward read."""
    asin: str
    title: str
    description: str
    bullet_points: tuple[str, ...]
    attributes: tuple[str, ...]
    options: dict          # option name -> tuple of values, in page order
    price: float
    rating: str
    reviews: tuple[str, ...]
    category: str          # one of SKILL_CATEGORIES
    product_category: str  # "A › B › C" path, for the category-match rule
    query: str             # the type phrase, for the query-match rule
    title_nouns: tuple[str, ...]  # brand + type nouns, for the title-noun rule
    instruction: str       # goal text of this product, before options and price
    instruction_attributes: tuple[str, ...]
    price_upper: float

    def text(self) -> str:
        """Lower-cased title, features and description: where WebShop looks for unmatched words."""
        return " ".join([self.title, *self.bullet_points, self.description]).lower()


@dataclass(frozen=True)
class Goal:
    """One shopping task: a target product, some of its attributes, one option combination, a budget."""
    index: int
    asin: str
    instruction_text: str
    attributes: tuple[str, ...]
    options: dict          # option name -> wanted value
    price_upper: float
    category: str


def _join_words(words) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _make_product(rng: random.Random, product_type, used_titles: set, used_asins: set) -> Product:
    category, phrase, article, nouns, path, attribute_pool, option_pools = product_type
    attributes = tuple(rng.sample(attribute_pool, 3 if len(attribute_pool) > 4 else 2))
    options = {name: tuple(rng.sample(values, rng.randint(2, min(3, len(values)))))
               for name, values in option_pools.items()}
    for _ in range(1000):  # titles are unique so a title search can single the product out
        brand, line = rng.choice(BRANDS), rng.choice(LINES)
        title = f"{brand} {line} {attributes[0].title()} {phrase.title()}"
        if title not in used_titles:
            break
    used_titles.add(title)
    asin = "B0" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8))
    while asin in used_asins:
        asin = "B0" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8))
    used_asins.add(asin)
    low = {"food": 4.0, "beauty": 5.0}.get(category, 8.0)
    price = round(rng.uniform(low, 6 * low), 2)
    bullets = tuple(f"{attribute.capitalize()}: {rng.choice(BENEFITS)}" for attribute in attributes)
    description = (f"The {brand} {phrase} from our {line} range. "
                   f"It is {_join_words(attributes)}, and {rng.choice(BENEFITS)}.")
    reviews = tuple(f"{rng.randint(3, 5)} stars: {line_text}" for line_text in rng.sample(REVIEW_LINES, 2))
    goal_attributes = tuple(rng.sample(attributes, 2))
    instruction = rng.choice(INSTRUCTIONS).format(article=article, noun=phrase, attrs=_join_words(goal_attributes))
    steps_above = [p for p in PRICE_STEPS if p > price][:4]
    price_upper = sorted(rng.sample(steps_above, 2))[1]
    return Product(asin=asin, title=title, description=description, bullet_points=bullets,
                   attributes=attributes, options=options, price=price,
                   rating=rng.choice(("3.5", "4.0", "4.5", "5.0", "N.A.")), reviews=reviews,
                   category=category, product_category=path, query=phrase,
                   title_nouns=(brand.lower(), *nouns), instruction=instruction,
                   instruction_attributes=goal_attributes, price_upper=price_upper)


def make_goals(products: list[Product], seed: int) -> list[Goal]:
    """WebShop's synthetic goals: each product's instruction, one goal per option combination,
    then one fixed shuffle (WebShop shuffles its goal list once with a fixed seed too)."""
    drafts = []
    for product in products:
        names = sorted(product.options)
        for combination in itertools.product(*(product.options[name] for name in names)):
            wanted = dict(zip(names, combination))
            option_text = ", and ".join(f"{name}: {value}" for name, value in wanted.items())
            text = (product.instruction + (f" with {option_text}" if option_text else "")
                    + f", and price lower than {product.price_upper:.2f} dollars")
            drafts.append((product, wanted, text))
    random.Random(seed + 233).shuffle(drafts)
    return [Goal(index=i, asin=product.asin, instruction_text=text, attributes=product.instruction_attributes,
                 options=wanted, price_upper=product.price_upper, category=product.category)
            for i, (product, wanted, text) in enumerate(drafts)]


def make_catalog(num_products: int = 300, seed: int = 0) -> tuple[list[Product], list[Goal]]:
    """Products spread evenly over PRODUCT_TYPES (so every category is covered), and their goals."""
    rng = random.Random(seed)
    used_titles, used_asins = set(), set()
    products = [_make_product(rng, PRODUCT_TYPES[i % len(PRODUCT_TYPES)], used_titles, used_asins)
                for i in range(max(1, int(num_products)))]
    rng.shuffle(products)
    return products, make_goals(products, seed)
