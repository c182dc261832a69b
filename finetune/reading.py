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


def _gold_chunk(rec: dict[str, Any], by_title: dict[str, list[int]], chunks: Sequence[Any],
                words_of: dict[int, set[str]] | None = None) -> tuple[int | None, str]:
    """The chunk of the record's article that holds its answer (None if none), and how it was
    found: by the output itself ("sentence": a prose fact's sentence), else, for a record that
    carries its ``answer`` (an infobox or table value, a prose span: the output is then a
    sentence of ours), by that value ("answer": the chunk holding it, as the metrics' ``contains``
    finds an answer, that shares the most words with the output). ``words_of``: a cache of
    each chunk's words, kept across the calls of one build (an article's chunks are read once
    for all its facts)."""
    from core.text import contains_answer, tokenize

    output = rec["output"].strip()
    probe = output.rstrip(".")[:160]
    mine = by_title.get(rec.get("source_title", ""), ())
    for pos in mine:
        if probe and probe in chunks[pos].body:
            return pos, "sentence"
    answer = str(rec.get("answer") or "").strip()
    if not answer:
        return None, "answer"
    words = set(tokenize(output))
    cache = {} if words_of is None else words_of
    best, best_shared = None, -1
    for pos in mine:
        body = chunks[pos].body
        if contains_answer(body, answer):
            if pos not in cache:
                cache[pos] = set(tokenize(body))
            shared = len(words & cache[pos])
            if shared > best_shared:
                best, best_shared = pos, shared
    return best, "answer"


def _no_gold_slots(count: int, share: float) -> set[int]:
    """Which of ``count`` reading records go without the gold passage: ``share`` of them,
    exactly (rounded), spread evenly."""
    n = round(count * share)
    return {int((i + 0.5) * count / n) for i in range(n)} if n else set()


def build_reading_records(records: Sequence[dict[str, Any]], chunks: Sequence[Any], *, count: int,
                          k: int = 4, no_gold_share: float = 0.2, seed: int = 42,
                          rag_template: str | None = None, bm25: Any | None = None,
                          ordered: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Up to ``count`` reading records from ``records`` (fact-like ones whose answer is found in
    a chunk of their own article), and a report of what was built. ``bm25``: the index's own
    keyword index over ``chunks`` (:func:`load_index_bm25`); built here when not given.

    ``no_gold_share`` of them (exactly, rounded) leave the gold passage out and answer with the
    template's abstention sentence; their distractors never hold the fact's answer. The
    records with the gold passage take the facts from the front of the order, those without
    it from the back: after a selection by fact coverage (``ordered``: the facts of the
    questions asked first) every asked fact that can be read gets a passage to read it in, and
    the abstention examples use facts nobody asked about. Without ``ordered`` the facts are
    drawn by the seed's hash, so that a file grouped by article does not give every reading
    record to its first articles."""
    from core.prompts import RagTemplate
    from core.text import contains_answer
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
    no_gold = _no_gold_slots(count, no_gold_share)
    used_facts: set[str] = set()
    skipped = {"no_gold_chunk": 0, "no_distractors": 0}
    found_by = {"sentence": 0, "answer": 0}
    words_of: dict[int, set[str]] = {}

    def build(rec: dict[str, Any], with_gold: bool) -> dict[str, Any] | None:
        fact = rec.get("fact") or rec["instruction"]
        if fact in used_facts:
            return None  # one reading record per fact: the budget covers more facts
        gold, found = _gold_chunk(rec, by_title, chunks, words_of)
        if gold is None:
            skipped["no_gold_chunk"] += 1
            return None
        positions, _ = bm25.search(rec["instruction"], k * 4 + 8)
        title = rec.get("source_title")
        answer = str(rec.get("answer") or "").strip()
        # distractors: other articles' passages, none of which holds the answer (so that the
        # abstention is true and the gold passage the only one to cite)
        distractors = [int(p) for p in positions if chunks[int(p)].title != title
                       and not (answer and contains_answer(chunks[int(p)].body, answer))][:k]
        if len(distractors) < (k - 1 if with_gold else k):
            skipped["no_distractors"] += 1
            return None
        used_facts.add(fact)
        if with_gold:
            found_by[found] += 1
            picked = distractors[: k - 1]
            slot = rng.randrange(k)
            picked.insert(slot, gold)
            output = f"{rec['output'].strip()} [{slot + 1}]"
        else:
            picked = distractors[:k]
            output = tpl.abstain
        passages = [{"title": chunks[p].title, "section": chunks[p].section, "text": chunks[p].body}
                    for p in picked]
        instruction, body = tpl.fill(rec["instruction"], passages)
        return {"id": _key(f"reading:{rec.get('id')}:{seed}")[:16], "instruction": instruction,
                "input": body, "output": output, "source_title": title, "task": "reading",
                "fact": rec.get("fact"), **({"answer": answer} if answer else {}),
                "gold": with_gold, "gold_position": (slot + 1) if with_gold else None}

    def fill(wanted: int, order: Sequence[dict[str, Any]], with_gold: bool) -> list[dict[str, Any]]:
        built: list[dict[str, Any]] = []
        for rec in order:
            if len(built) >= wanted:
                break
            made = build(rec, with_gold)
            if made is not None:
                built.append(made)
        return built

    gold_records = fill(count - len(no_gold), candidates, True)
    abstaining = fill(len(no_gold), candidates[::-1], False)
    # the two kinds interleaved as planned (a record short of one kind leaves its slot out)
    out: list[dict[str, Any]] = []
    gold_iter, abstain_iter = iter(gold_records), iter(abstaining)
    for slot in range(count):
        nxt = next(abstain_iter if slot in no_gold else gold_iter, None)
        if nxt is not None:
            out.append(nxt)
    report = {"records": len(out), "with_gold": sum(r["gold"] for r in out),
              "without_gold": sum(not r["gold"] for r in out), "k": k, "seed": seed,
              "no_gold_share": no_gold_share, "candidates": len(candidates), "skipped": skipped,
              "gold_found_by": found_by,
              "order": "selection" if ordered else "seeded hash",
              "rag_template": tpl.name, "rag_template_fingerprint": tpl.fingerprint}
    return out, report
