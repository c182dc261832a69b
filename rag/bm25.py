"""Keyword retrieval: BM25 over the same chunks, with an inverted index (``bm25s``).

Portuguese text is folded before tokenising (lower case, accents removed: "São Paulo" and "sao
paulo" match), stop words are dropped, and a light suffix stripper merges plural and gender
forms ("botânica", "botânicos" → "botanic"): :func:`core.text.tokenize`. ``bm25s`` stores the index as sparse numpy arrays
and JSON (no pickle) and scores only documents that share a term with the query, so it scales
to the millions of chunks of the full ptwiki.

The index is written here rather than by ``bm25s.BM25.index``, whose score matrix is built in
memory (~4 KiB a chunk: 4 GB at 1 M chunks, ~20 GB for ptwiki's 5 M). :meth:`BM25Index.write`
produces the files ``bm25s`` saves (same names, dtypes, parameters and scores, as its lucene
method computes them) with the arrays it holds bounded by a budget; ``bm25s`` loads and scores
them. Only the vocabulary grows with the corpus: the token → id dict while texts are read, and
~30 bytes a term of arrays (document frequencies, idf, column offsets) afterwards.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from itertools import islice
from pathlib import Path

import numpy as np

from core.text import TOKENIZER_VERSION, import_bm25s, tokenize

log = logging.getLogger(__name__)

BUDGET_BYTES = 1 << 30
EMPTY_TEXT_TOKEN = "\u2205"  # a text with no token still needs one to be a document
TOKENIZER_FILE = "tokenizer.json"
# bm25s's file names (BM25.save / BM25.load defaults).
DATA, INDICES, INDPTR = "data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy"
VOCAB, PARAMS = "vocab.index.json", "params.index.json"
# The spill: per (text, term) entry its term id and count; per text its length in tokens and
# number of entries.
SPILL_FILES = ("terms.i32", "tf.i32", "len.i32", "nnz.i32")
# Peak bytes of the arrays alive at once, per element, that size the blocks within the budget:
# a read token (its id, its document, the packed int64 key, the sort and the run starts), an
# entry of the spill while it is scanned (term, tf, document, mask, float64 scoring of the
# selected ones), an entry of a term block (term, document, score, stable order, output).
_TOKEN_BYTES = 40
_SCAN_BYTES = 48
_BLOCK_BYTES = 28


class BM25Index:
    """A BM25 index over chunk texts; ids are positions in the chunk list."""

    def __init__(self, model, n_docs: int):
        self._model = model
        self.n_docs = n_docs

    @classmethod
    def build(cls, texts: Iterable[str], k1: float = 1.2, b: float = 0.75, *,
              budget_bytes: int = BUDGET_BYTES) -> BM25Index:
        """Index ``texts`` into memory (small corpora: tests, reading tasks). Written by
        :meth:`write` to a temporary folder and read back, so it scores as an index on disk."""
        with tempfile.TemporaryDirectory(prefix="compara-bm25-") as tmp:
            folder = Path(tmp) / "index"
            cls.write(texts, folder, k1=k1, b=b, budget_bytes=budget_bytes, work_dir=tmp)
            return cls.load(folder)

    @staticmethod
    def write(texts: Iterable[str], folder: str | Path, *, k1: float = 1.2, b: float = 0.75,
              budget_bytes: int = BUDGET_BYTES, work_dir: str | Path | None = None) -> dict:
        """Index ``texts`` (any iterable, read once) into ``folder``; returns counts.

        Texts are tokenised in segments whose (document, term) counts go to spill files in a
        temporary folder under ``work_dir`` (default: next to ``folder``), removed at the end;
        the score matrix is then written column block by column block, each block's entries
        within the budget (a block holds at least one whole term). ``tokenizer.json`` is
        written last, so a build stopped midway leaves a folder that does not load."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / TOKENIZER_FILE).unlink(missing_ok=True)
        spill = Path(tempfile.mkdtemp(prefix=".bm25-spill-", dir=work_dir or folder.parent))
        try:
            counts = _spill_counts(texts, spill, folder / VOCAB, budget_bytes)
            blocks = _write_matrix(spill, folder, counts, k1, b, budget_bytes)
        finally:
            shutil.rmtree(spill, ignore_errors=True)
        bm25s = import_bm25s()
        model = bm25s.BM25(k1=k1, b=b, method="lucene")
        params = {"k1": model.k1, "b": model.b, "delta": model.delta, "method": model.method,
                  "idf_method": model.idf_method, "dtype": model.dtype,
                  "int_dtype": model.int_dtype, "num_docs": counts["docs"],
                  "version": bm25s.__version__, "backend": model.backend}
        with open(folder / PARAMS, "w") as fh:
            json.dump(params, fh, indent=4)
        (folder / TOKENIZER_FILE).write_text(
            json.dumps({"tokenizer": TOKENIZER_VERSION, "n_docs": counts["docs"]}),
            encoding="utf-8")
        return {"docs": counts["docs"], "terms": counts["terms"],
                "entries": int(counts["indptr"][-1]), "segments": len(counts["segments"]),
                "blocks": blocks, "budget_bytes": budget_bytes}

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._model.save(str(folder), show_progress=False, allow_pickle=False)
        (folder / TOKENIZER_FILE).write_text(
            json.dumps({"tokenizer": TOKENIZER_VERSION, "n_docs": self.n_docs}), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = False) -> BM25Index:
        bm25s = import_bm25s()
        folder = Path(folder)
        meta = json.loads((folder / TOKENIZER_FILE).read_text(encoding="utf-8"))
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


# -- the bounded build -------------------------------------------------------------------------

def _spill_counts(texts: Iterable[str], spill: Path, vocab_file: Path, budget: int) -> dict:
    """Read the texts once: each segment's distinct (document, term) pairs and their counts
    go to the spill (terms.i32, tf.i32; per document its length and number of terms), the
    vocabulary to ``vocab_file`` (bm25s's JSON, "" last as its ``create_empty_token`` adds).
    Returns the counts the matrix is built from (the vocabulary dict itself is dropped)."""
    seg_tokens = max(1, budget // 4 // _TOKEN_BYTES)
    vocab: dict[str, int] = {}
    df = np.zeros(0, dtype=np.int64)
    segments: list[tuple[int, int]] = []  # (documents, entries) of each segment, in order
    docs = total_len = 0
    with ExitStack() as stack:
        files = {name: stack.enter_context(open(spill / name, "wb")) for name in SPILL_FILES}
        ids, lens = array("i"), array("i")
        for text in texts:
            toks = tokenize(text) or [EMPTY_TEXT_TOKEN]
            ids.extend([vocab.setdefault(t, len(vocab)) for t in toks])
            lens.append(len(toks))
            if len(ids) >= seg_tokens:
                df = _spill_segment(ids, lens, files, df, len(vocab), segments)
                docs, total_len = docs + len(lens), total_len + sum(lens)
                ids, lens = array("i"), array("i")
        if lens:
            df = _spill_segment(ids, lens, files, df, len(vocab), segments)
            docs, total_len = docs + len(lens), total_len + sum(lens)
    if not docs:
        raise ValueError("no text to index")
    n_terms = len(vocab)
    if "" not in vocab:
        vocab[""] = n_terms
    _write_vocab(vocab, vocab_file)
    del vocab
    indptr = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    log.info("BM25: %d texts read, %d terms, %d (text, term) entries in %d segments", docs,
             n_terms, indptr[-1], len(segments))
    return {"docs": docs, "terms": n_terms, "avg_len": total_len / docs, "df": df,
            "indptr": indptr, "segments": segments}


def _spill_segment(ids: array, lens: array, files: dict, df: np.ndarray, n_terms: int,
                   segments: list[tuple[int, int]]) -> np.ndarray:
    """Append one segment's distinct (document, term) pairs, sorted by document then term,
    to the spill; returns the document frequencies counted so far (grown to ``n_terms``)."""
    lengths = np.frombuffer(lens, dtype=np.int32)
    key = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    key <<= 32
    key |= np.frombuffer(ids, dtype=np.int32)  # ids are >= 0: no sign bits to spread
    key.sort()
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    tf = np.diff(np.append(starts, len(key))).astype(np.int32)
    pairs = key[starts]
    del key, starts
    terms = (pairs & 0xFFFFFFFF).astype(np.int32)
    nnz = np.bincount(pairs >> 32, minlength=len(lengths)).astype(np.int32)
    del pairs
    for name, values in (("terms.i32", terms), ("tf.i32", tf), ("len.i32", lengths),
                         ("nnz.i32", nnz)):
        values.tofile(files[name])
    segments.append((len(lengths), len(terms)))
    grown = np.zeros(n_terms, dtype=np.int64)
    grown[:len(df)] = df
    grown += np.bincount(terms, minlength=n_terms)
    return grown


def _write_vocab(vocab: dict[str, int], path: Path, block: int = 100_000) -> None:
    """The vocabulary as one JSON object, written a block of terms at a time (compact, as
    bm25s writes it with orjson)."""
    items = iter(vocab.items())
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("{")
        first = True
        while part := dict(islice(items, block)):
            fh.write(("" if first else ",") + json.dumps(part, ensure_ascii=False,
                                                           separators=(",", ":"))[1:-1])
            first = False
        fh.write("}")


def _idf(df: np.ndarray, n_docs: int) -> np.ndarray:
    """bm25s's lucene idf, float32: log(1 + (N - df + 0.5) / (df + 0.5)), computed with
    math.log like bm25s once for each distinct df (few) rather than once a term."""
    values, inverse = np.unique(df, return_inverse=True)
    idf = np.array([math.log(1 + (n_docs - int(d) + 0.5) / (int(d) + 0.5)) for d in values],
                   dtype=np.float64)
    return idf.astype(np.float32)[inverse]


def _term_blocks(indptr: np.ndarray, cap: int) -> Iterator[tuple[int, int]]:
    """Consecutive term ranges whose entries number at most ``cap`` (or one term, if more)."""
    n_terms, t0 = len(indptr) - 1, 0
    while t0 < n_terms:
        t1 = int(np.searchsorted(indptr, indptr[t0] + cap, side="right")) - 1
        t1 = min(max(t1, t0 + 1), n_terms)
        yield t0, t1
        t0 = t1


def _write_matrix(spill: Path, folder: Path, counts: dict, k1: float, b: float,
                  budget: int) -> int:
    """The CSC score matrix (columns = terms, rows = documents in order within a column) into
    bm25s's three .npy files, one term block at a time; returns the number of blocks."""
    indptr, n_docs = counts["indptr"], counts["docs"]
    idf = _idf(counts["df"], n_docs)
    del counts["df"]
    nnz = int(indptr[-1])
    np.save(folder / INDPTR, indptr, allow_pickle=False)
    offsets = {}
    for name, dtype in ((DATA, np.float32), (INDICES, np.int32)):
        header = np.lib.format.open_memmap(folder / name, mode="w+", dtype=dtype, shape=(nnz,))
        offsets[name] = header.offset
        del header  # only its header and size: the blocks are written as plain file writes
    scan_bytes = max(1, budget // 4 // _SCAN_BYTES) * _SCAN_BYTES
    cap = max(1, (budget - scan_bytes) // _BLOCK_BYTES)
    blocks = 0
    with open(folder / DATA, "r+b") as data_fh, open(folder / INDICES, "r+b") as idx_fh:
        for t0, t1 in _term_blocks(indptr, cap):
            terms, docs, scores = _block_entries(spill, counts, idf, t0, t1, k1, b)
            order = np.argsort(terms, kind="stable")  # entries come in document order
            del terms
            start = int(indptr[t0])
            data_fh.seek(offsets[DATA] + start * 4)
            scores[order].tofile(data_fh)
            del scores
            idx_fh.seek(offsets[INDICES] + start * 4)
            docs[order].tofile(idx_fh)
            del docs, order
            blocks += 1
    log.info("BM25: %d entries written in %d term blocks", nnz, blocks)
    return blocks


def _block_entries(spill: Path, counts: dict, idf: np.ndarray, t0: int, t1: int, k1: float,
                   b: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(term, document, score) of every entry whose term is in [t0, t1), in document order,
    read from the spill in the segments it was written in."""
    indptr, avg_len = counts["indptr"], counts["avg_len"]
    size = int(indptr[t1] - indptr[t0])
    terms = np.empty(size, dtype=np.int32)
    docs = np.empty(size, dtype=np.int32)
    scores = np.empty(size, dtype=np.float32)
    whole = t0 == 0 and t1 == len(indptr) - 1
    at = d0 = 0
    with ExitStack() as stack:
        files = {name: stack.enter_context(open(spill / name, "rb")) for name in SPILL_FILES}
        for n_docs, n_entries in counts["segments"]:
            seg_terms = np.fromfile(files["terms.i32"], dtype=np.int32, count=n_entries)
            tf = np.fromfile(files["tf.i32"], dtype=np.int32, count=n_entries)
            lengths = np.fromfile(files["len.i32"], dtype=np.int32, count=n_docs)
            per_doc = np.fromfile(files["nnz.i32"], dtype=np.int32, count=n_docs)
            local = np.repeat(np.arange(n_docs, dtype=np.int32), per_doc)
            if not whole:
                keep = (seg_terms >= t0) & (seg_terms < t1)
                seg_terms, tf, local = seg_terms[keep], tf[keep], local[keep]
                del keep
            # bm25s (lucene): idf * tf / (k1 * (1 - b + b * len / avg_len) + tf), in float64
            # from its float32 idf and tf, stored as float32; the same operations in the same
            # order give the same bits.
            norm = k1 * ((1 - b) + b * lengths.astype(np.float64) / avg_len)
            tf64 = tf.astype(np.float64)
            tfc = tf64 / (norm[local] + tf64)
            end = at + len(seg_terms)
            scores[at:end] = idf[seg_terms].astype(np.float64) * tfc
            terms[at:end] = seg_terms
            docs[at:end] = local + d0
            at, d0 = end, d0 + n_docs
    if at != size:
        raise RuntimeError(f"BM25 spill holds {at} entries for terms {t0}..{t1}, expected {size}")
    return terms, docs, scores
