"""Write the built-in catalogue in WebShop's own file formats, so WebShop's text environment can play it.

WebShop's data normally comes from a download of scraped products; this writes a small stand-in made
from `envs.webshop.catalog` (same seed, same products as `BuiltinWebShop`), laid out the way a
WebShop checkout expects its data, next to the checkout's `web_agent_site` folder:

    <out>/data/items_shuffle_1000.json     products: asin, name, full_description, small_description,
                                            pricing ("$12.50"), customization_options, images,
                                            category, query, product_category
    <out>/data/items_ins_v2_1000.json      per asin: attributes, instruction, instruction_attributes
                                            (what WebShop's synthetic goals are made from)
    <out>/data/items_human_ins.json        per asin: a list of instruction, instruction_attributes,
                                            instruction_options (WebShop reads it even for synthetic goals)
    <out>/search_engine/resources/documents.jsonl   one search document per product: id, contents, product
    <out>/search_engine/indexes/           the Lucene index of those documents, built by pyserini

`envs.webshop.real.RealWebShop(data_dir=<out>)` plays it. The index is built with pyserini's indexer
and the options WebShop's own indexing script uses (positions, document vectors and raw documents
stored), so WebShop's `LuceneSearcher` reads it unchanged.

    python -m envs.webshop.export --out /data/webshop_builtin --num 150
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from envs.base import MissingPackageError
from envs.webshop.catalog import Product, make_catalog

PRODUCTS_FILE = "items_shuffle_1000.json"
ATTRIBUTES_FILE = "items_ins_v2_1000.json"
HUMAN_GOALS_FILE = "items_human_ins.json"


def product_record(product: Product) -> dict:
    """One product as WebShop's scraped product file stores it (the fields its loader reads)."""
    return {
        "asin": product.asin,
        "name": product.title,
        "full_description": product.description,
        "small_description": list(product.bullet_points),
        "pricing": f"${product.price:.2f}",
        "customization_options": {name: [{"value": value, "image": None} for value in values]
                                  for name, values in product.options.items()},
        "images": [f"https://example.invalid/{product.asin}.jpg"],  # shown only in WebShop's HTML mode
        "category": product.category,
        "query": product.query,
        "product_category": product.product_category,
    }


def attribute_record(product: Product) -> dict:
    """The product's attributes and the instruction its synthetic goals start from."""
    return {"attributes": list(product.attributes), "instruction": product.instruction,
            "instruction_attributes": list(product.instruction_attributes)}


def human_goal_records(products: list[Product], goals) -> dict[str, list[dict]]:
    """Each built-in goal as a "human" instruction of its product (text without the price clause,
    which WebShop adds itself), so `human_goals=True` plays the same tasks."""
    by_asin: dict[str, list[dict]] = {product.asin: [] for product in products}
    for goal in goals:
        text = goal.instruction_text.split(", and price lower than")[0]
        by_asin[goal.asin].append({"instruction": text, "instruction_attributes": list(goal.attributes),
                                   "instruction_options": list(goal.options.values())})
    return by_asin


def search_document(product: Product) -> dict:
    """The search document of a product: its id and the lower-cased text that is indexed (title,
    description, first feature line, then "name: value, value" per option, the way WebShop indexes)."""
    option_text = ", and ".join(f"{name}: {', '.join(values)}" for name, values in product.options.items())
    contents = " ".join([product.title, product.description, product.bullet_points[0], option_text]).lower()
    return {"id": product.asin, "contents": contents, "product": product_record(product)}


def build_index(resources: str, index: str) -> None:
    """Index the documents under `resources` into `index` with pyserini's Lucene indexer (needs Java)."""
    try:
        import pyserini  # noqa: F401  (only to give a clear error before starting the indexer)
    except ImportError as error:
        raise MissingPackageError("building WebShop's search index needs pyserini and a JDK; see the "
                                  "README's WebShop instructions (tools/webshop/install.sh)") from error
    command = [sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonCollection",
               "--input", resources, "--index", index, "--generator", "DefaultLuceneDocumentGenerator",
               "--threads", "1", "--storePositions", "--storeDocvectors", "--storeRaw"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not os.path.isdir(index):
        raise RuntimeError(f"pyserini's indexer failed (exit {result.returncode}):\n{result.stderr[-3000:]}")


def export_catalog(out: str, num_products: int = 150, catalog_seed: int = 0, index: bool = True) -> dict:
    """Write products, goals and search files for `make_catalog(num_products, catalog_seed)` under `out`
    (use the same numbers as the `BuiltinWebShop` you compare against); returns the written paths."""
    products, goals = make_catalog(num_products, catalog_seed)
    data = os.path.join(out, "data")
    resources = os.path.join(out, "search_engine", "resources")
    os.makedirs(data, exist_ok=True)
    os.makedirs(resources, exist_ok=True)
    paths = {"products": os.path.join(data, PRODUCTS_FILE), "attributes": os.path.join(data, ATTRIBUTES_FILE),
             "human_goals": os.path.join(data, HUMAN_GOALS_FILE),
             "documents": os.path.join(resources, "documents.jsonl"),
             "index": os.path.join(out, "search_engine", "indexes")}
    with open(paths["products"], "w") as f:
        json.dump([product_record(p) for p in products], f)
    with open(paths["attributes"], "w") as f:
        json.dump({p.asin: attribute_record(p) for p in products}, f)
    with open(paths["human_goals"], "w") as f:
        json.dump(human_goal_records(products, goals), f)
    with open(paths["documents"], "w") as f:
        for product in products:
            f.write(json.dumps(search_document(product)) + "\n")
    if index:
        build_index(resources, paths["index"])
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write the built-in WebShop catalogue as WebShop data files "
                                                 "and a pyserini search index.")
    parser.add_argument("--out", required=True, help="output folder (pass it as RealWebShop's data_dir)")
    parser.add_argument("--num", type=int, default=150,
                        help="number of products (default 150; WebShop keeps goals 0-499 for testing, so fewer "
                             "than about 120 products leave no training goal)")
    parser.add_argument("--catalog-seed", type=int, default=0, help="catalogue seed (default 0)")
    parser.add_argument("--no-index", action="store_true", help="write the files only, skip the Lucene index")
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error("--num must be at least 1")
    paths = export_catalog(args.out, args.num, args.catalog_seed, index=not args.no_index)
    print(f"wrote {args.num} products under {os.path.join(args.out, 'data')}"
          + ("" if args.no_index else f" and their index at {paths['index']}"))


if __name__ == "__main__":
    main()
