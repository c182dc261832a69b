"""Text normalisation shared by answer matching, retrieval evaluation and metrics."""

from __future__ import annotations

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
