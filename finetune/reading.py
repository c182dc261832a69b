"""Reading tasks: training records that prompt the way the retrieval arms do.

A fact record ("Quando Tiradentes foi preso?" -> a sentence) becomes a reading record whose
instruction and input are the RAG template filled with ``k`` passages of the index: the passage
that holds the answer among distractors from other articles (found by BM25 for the question, as
retrieval would find them), at a position drawn by the seed, and whose output is the answer
citing its passage ("... [2]"). A share of the records leave the gold passage out and are
answered with the template's abstention sentence. This is retrieval-augmented fine-tuning: the
fine-tuned+rag arm then measures a model trained to read the passages it is given, the
fine-tuned arm one trained to remember.

Built at fine-tune time from a verified index (``compara finetune`` with ``finetune.reading``);
what was built is recorded in the adapter's summary.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# records whose output is a short statement of one fact: good reading questions
SOURCE_TASKS = ("fact", "infobox", "table", "definition")


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_index_chunks(index_dir: str | Path) -> list[Any]:
    """The chunks of an index, read only after its manifest and checksums check out."""
    from rag.store import CHUNKS, read_chunks, read_manifest, verify_files

    index_dir = Path(index_dir)
    verify_files(index_dir, read_manifest(index_dir))
    return read_chunks(index_dir / CHUNKS)


def load_index_bm25(index_dir: str | Path) -> Any | None:
    """The index's own BM25 over the same chunks, in the same order (None if it has none);
    call after :func:`load_index_chunks` has verified the folder."""
    from rag.bm25 import BM25Index
    from rag.store import BM25_DIR

    folder = Path(index_dir) / BM25_DIR
    return BM25Index.load(folder) if folder.is_dir() else None


def _gold_chunk(rec: dict[str, Any], by_title: dict[str, list[int]], chunks: Sequence[Any]) -> int | None:
    """The chunk of the record's article that holds its answer (the output, or its first
    sentence), or None."""
    output = rec["output"].strip()
    probe = output.rstrip(".")[:160]
    for pos in by_title.get(rec.get("source_title", ""), ()):
        if probe and probe in chunks[pos].body:
            return pos
    return None


def build_reading_records(records: Sequence[dict[str, Any]], chunks: Sequence[Any], *, count: int,
                          k: int = 4, no_gold_share: float = 0.2, seed: int = 42,
                          rag_template: str | None = None, bm25: Any | None = None,
                          ordered: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Up to ``count`` reading records from ``records`` (fact-like ones whose answer is found in
    a chunk of their own article), and a report of what was built. ``bm25``: the index's own
    keyword index over ``chunks`` (:func:`load_index_bm25`); built here when not given.
    ``ordered``: ``records`` come in a meaningful order (a selection by fact coverage, the facts
    of the questions first) and reading records follow it; otherwise facts are drawn by the
    seed's hash, so that a file grouped by article does not give every reading record to its
    first articles."""
    from core.prompts import RagTemplate
    from rag.bm25 import BM25Index

    tpl = RagTemplate.load(rag_template) if rag_template else RagTemplate.load()
    by_title: dict[str, list[int]] = {}
    for pos, c in enumerate(chunks):
        by_title.setdefault(c.title, []).append(pos)
    candidates = [r for r in records if r.get("task") in SOURCE_TASKS and not r.get("input")]
    if not ordered:
        candidates.sort(key=lambda r: _key(f"{seed}:{r.get('id') or r['instruction']}"))
    if bm25 is None and chunks and candidates:
        bm25 = BM25Index.build([c.text for c in chunks])
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    seen_facts: set[str] = set()
    skipped = {"no_gold_chunk": 0, "no_distractors": 0}
    for rec in candidates:
        if len(out) >= count:
            break
        fact = rec.get("fact") or rec["instruction"]
        if fact in seen_facts:
            continue  # one reading record per fact: the budget covers more facts
        gold = _gold_chunk(rec, by_title, chunks)
        if gold is None:
            skipped["no_gold_chunk"] += 1
            continue
        positions, _ = bm25.search(rec["instruction"], k * 4 + 8)
        title = rec.get("source_title")
        distractors = [int(p) for p in positions if chunks[int(p)].title != title][: k]
        if len(distractors) < k - 1:
            skipped["no_distractors"] += 1
            continue
        seen_facts.add(fact)
        with_gold = rng.random() >= no_gold_share
        if with_gold:
            picked = distractors[: k - 1]
            slot = rng.randrange(k)
            picked.insert(slot, gold)
            answer = f"{rec['output'].strip()} [{slot + 1}]"
        else:
            picked = distractors[:k]
            answer = tpl.abstain
        passages = [{"title": chunks[p].title, "section": chunks[p].section, "text": chunks[p].body}
                    for p in picked]
        instruction, body = tpl.fill(rec["instruction"], passages)
        out.append({"id": _key(f"reading:{rec.get('id')}:{seed}")[:16], "instruction": instruction,
                    "input": body, "output": answer, "source_title": title, "task": "reading",
                    "fact": rec.get("fact"), "gold": with_gold,
                    "gold_position": (slot + 1) if with_gold else None})
    report = {"records": len(out), "with_gold": sum(r["gold"] for r in out),
              "without_gold": sum(not r["gold"] for r in out), "k": k, "seed": seed,
              "no_gold_share": no_gold_share, "candidates": len(candidates), "skipped": skipped,
              "order": "selection" if ordered else "seeded hash",
              "rag_template": tpl.name, "rag_template_fingerprint": tpl.fingerprint}
    return out, report
