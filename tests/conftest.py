"""Shared fixtures: a locally trained tokenizer and a tiny random Qwen2 model (no download)."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CORPUS = [
    "<think>The apple should be in the fridge, so I go there first.</think><action>go to fridge 1</action>",
    "You arrive at countertop 1. On the countertop 1, you see a apple 1, a knife 2, and a mug 3.",
    "Your task is to: put a hot apple in diningtable. Admissible actions: go to cabinet 1, open fridge 1",
    "<think>Search for the founder first.</think><search>founder of Veltrano Works</search>",
    "<information>Doc 1 (Title: \"Veltrano Works\") a company founded in 1871.</information><answer>1871</answer>",
    "search[red cotton t-shirt] click[Buy Now] [SEP] Back to Search [SEP] Page 1 (Total results: 50)",
]


@pytest.fixture(scope="session")
def tokenizer():
    from tools.tinymodel import build_tokenizer
    return build_tokenizer(CORPUS * 20, vocab_size=512)


@pytest.fixture(scope="session")
def tiny_model_factory(tokenizer):
    from tools.tinymodel import tiny_model

    def make(seed=0, **kwargs):
        return tiny_model(tokenizer, seed=seed, **kwargs)
    return make


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A saved tiny random model folder, loadable with from_pretrained (for train.py subprocesses)."""
    from tools.tinymodel import build_tokenizer, tiny_model
    path = str(tmp_path_factory.mktemp("tiny"))
    tokenizer = build_tokenizer(CORPUS * 20, vocab_size=512)
    tiny_model(tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


WEBSHOP_PRODUCTS = 150   # over 500 goals, so WebShop's train split (goals 500+) is not empty


def webshop_checkout() -> str:
    """$WEBSHOP_PATH, else the unchanged WebShop snapshot that sits next to the repository in shared/."""
    return os.environ.get("WEBSHOP_PATH") or os.path.join(os.path.dirname(ROOT), "shared", "webshop-64fa2a5")


@pytest.fixture(scope="session")
def webshop_real(tmp_path_factory):
    """(checkout, data_dir): WebShop's own code and the built-in catalogue exported in its formats with a
    pyserini index; skips with the reason when the checkout or a requirement (tools/webshop/install.sh)
    is missing."""
    import importlib.util
    import subprocess
    checkout = webshop_checkout()
    if not os.path.isdir(os.path.join(checkout, "web_agent_site")):
        pytest.skip(f"needs a WebShop checkout at {checkout} (or set WEBSHOP_PATH)")
    missing = [name for name in ("pyserini", "jnius", "gym", "bs4", "thefuzz", "cleantext", "rank_bm25",
                                 "selenium", "spacy", "en_core_web_sm") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"WebShop's requirements are missing ({', '.join(missing)}): bash tools/webshop/install.sh")
    data = str(tmp_path_factory.mktemp("webshop_data"))
    subprocess.run([sys.executable, "-m", "envs.webshop.export", "--out", data, "--num", str(WEBSHOP_PRODUCTS)],
                   cwd=ROOT, check=True, capture_output=True)
    return checkout, data
