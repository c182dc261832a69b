"""Keyword retrieval: BM25 over the same chunks, with an inverted index (``bm25s``).

Portuguese text is folded before tokenising (lower case, accents removed: "São Paulo" and "sao
paulo" match), stop words are dropped, and a light suffix stripper merges plural and gender
forms ("botânica", "botânicos" → "botanic"): :func:`core.text.tokenize`. ``bm25s`` stores the index as sparse numpy arrays
and JSON (no pickle) and scores only documents that share a term with the query, so it scales
to the millions of chunks of the full ptwiki.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from core.text import TOKENIZER_VERSION, import_bm25s, tokenize


class BM25Index:
    """A BM25 index over chunk texts; ids are positions in the chunk list."""

    def __init__(self, model, n_docs: int):
        self._model = model
        self.n_docs = n_docs

    @classmethod
    def build(cls, texts: Iterable[str], k1: float = 1.2, b: float = 0.75) -> BM25Index:
        """Index ``texts`` (any iterable: they are tokenised one at a time and not kept).

        Each text is held as a numpy array of token ids (4 bytes a token) rather than a list of
        strings (~60 bytes a token): ~0.7 KB a chunk of 1,000 characters for the ids. bm25s's
        own build (its score matrix) brings the peak to ~4 KB a chunk, measured at 1 M chunks
        (4,043 MiB; ~20 GB at 5 M chunks: BENCHMARKS.md, the index at ptwiki scale)."""
        bm25s = import_bm25s()
        vocab: dict[str, int] = {}
        ids: list[np.ndarray] = []
        for text in texts:
            # bm25s needs at least one token per document to build its vocabulary.
            toks = tokenize(text) or ["\u2205"]
            ids.append(np.fromiter((vocab.setdefault(t, len(vocab)) for t in toks),
                                   dtype=np.int32, count=len(toks)))
        model = bm25s.BM25(k1=k1, b=b, method="lucene")
        model.index((ids, vocab), show_progress=False)
        return cls(model, len(ids))

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._model.save(str(folder), show_progress=False, allow_pickle=False)
        (folder / "tokenizer.json").write_text(
            json.dumps({"tokenizer": TOKENIZER_VERSION, "n_docs": self.n_docs}), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = False) -> BM25Index:
        bm25s = import_bm25s()
        folder = Path(folder)
        meta = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        if meta.get("tokenizer") != TOKENIZER_VERSION:
            raise ValueError(f"{folder}: BM25 index made with tokenizer {meta.get('tokenizer')!r}, "
                             f"this version uses {TOKENIZER_VERSION!r}; rebuild the index")
        model = bm25s.BM25.load(str(folder), mmap=mmap, allow_pickle=False,
                                show_progress=False, verbosity=0)
        return cls(model, int(meta["n_docs"]))

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores) of the best ``k`` chunks that share a term with the query."""
        tokens = [t for t in tokenize(query) if t in self._model.vocab_dict]
        if not tokens or k < 1:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores = self._model.get_scores(tokens)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        # stable order: score, then position
        top = top[np.lexsort((top, -scores[top]))]
        top = top[scores[top] > 0]
        return top.astype(np.int64), scores[top].astype(np.float32)
