"""Text normalisation shared by answer matching, retrieval evaluation and metrics."""

from __future__ import annotations

import functools
import re
import unicodedata

_SPACES = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def fold(text: str, accents: bool = False) -> str:
    """Case-folded, whitespace-collapsed text; accents removed unless ``accents``."""
    text = text.casefold()
    if not accents:
        text = strip_accents(text)
    return _SPACES.sub(" ", text).strip()


def fold_words(text: str) -> str:
    """``fold`` plus punctuation turned into spaces: "6.400 km" and "6 400 km" stay distinct,
    but "Rio Negro," matches "rio negro"."""
    return _SPACES.sub(" ", _PUNCT.sub(" ", fold(text))).strip()


def contains_answer(haystack: str, answer: str) -> bool:
    """Whether ``answer`` occurs in ``haystack`` as whole words, ignoring case, accents and
    punctuation ("Tiradentes" is found in "…por Tiradentes.", "1792" not in "17920")."""
    needle = fold_words(answer)
    if not needle:
        return False
    hay = f" {fold_words(haystack)} "
    return f" {needle} " in hay


# -- Portuguese words: the keyword index's tokens (rag.bm25) and the measures' content words --

_TOKEN_RE = re.compile(r"\w+", re.UNICODE)
TOKENIZER_VERSION = "pt-fold-light-stem-1"


def fold_case(text: str) -> str:
    """Lower case without accents: 'Ribeirão' → 'ribeirao' (spacing kept, unlike
    :func:`core.text.fold`)."""
    return strip_accents(text.casefold())


def import_bm25s():
    """bm25s, imported; it sets its own logger to DEBUG when imported, which would put its
    notes among the command's lines: back to warnings only (every import of it goes here)."""
    import logging

    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


@functools.lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    import_bm25s()
    from bm25s.stopwords import STOPWORDS_PORTUGUESE

    return frozenset(fold_case(w) for w in STOPWORDS_PORTUGUESE)


# Longest first; each only when what remains is long enough to stay meaningful.
_SUFFIXES = ("oes", "aes", "ais", "eis", "ois", "ns", "es", "as", "os", "a", "o", "s", "e")


def stem(token: str) -> str:
    """A light Portuguese stemmer (plural and gender endings only); digits are kept."""
    if len(token) <= 4 or token.isdigit():
        return token
    for suffix in _SUFFIXES:
        if token.endswith(suffix) and len(token) - len(suffix) >= 4:
            return token[: -len(suffix)]
    return token


def tokenize(text: str) -> list[str]:
    stop = stopwords()
    tokens = []
    for tok in _TOKEN_RE.findall(fold_case(text)):
        if tok in stop or (len(tok) < 2 and not tok.isdigit()):
            continue
        tokens.append(stem(tok))
    return tokens
