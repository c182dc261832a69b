"""Fact exposure: the one-pass matcher vs testing every question against every record.

    python bench/exposure.py [DATA_DIR] [--repeats 3]

DATA_DIR holds instructions.train.jsonl and articles.jsonl (default: data/amostra, written by
`compara ingest`). The peer is the direct method with its best shortcut: every record is
normalised once, then each question's references are searched in each record with Python's
substring search (" ref " in " record "). Both run interleaved, several times; the medians and
the ratio are printed, and the counts must agree.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.exposure import compute_exposure  # noqa: E402
from core.io import read_jsonl  # noqa: E402
from core.metrics import ARTICLES, normalize, words  # noqa: E402
from core.questions import load_questions  # noqa: E402


def peer(questions: dict[str, list[str]], records: list[dict]) -> dict[str, tuple[int, int]]:
    fields = [[f" {normalize(r[k])} " for k in ("instruction", "input", "output") if r.get(k)]
              for r in records]
    outputs = [f" {normalize(r['output'])} " for r in records]
    out = {}
    for qid, refs in questions.items():
        needles = [f" {normalize(x)} " for x in refs]
        out[qid] = (sum(any(n in f for n in needles for f in fs) for fs in fields),
                    sum(any(n in o for n in needles) for o in outputs))
    return out


def ours(questions: dict[str, list[str]], records: list[dict]) -> dict[str, tuple[int, int]]:
    ex = compute_exposure(({"id": q, "reference": r} for q, r in questions.items()), records)
    return {q: (e.records, e.outputs) for q, e in ex.items()}


def more_questions(articles: list[dict], n: int, seed: int = 0) -> dict[str, list[str]]:
    """Extra references: random 1–3 word spans of the articles (real Portuguese n-grams)."""
    rng = random.Random(seed)
    texts = [a["text"].split() for a in articles]
    out = {}
    while len(out) < n:
        ws = rng.choice(texts)
        i, k = rng.randrange(len(ws)), rng.randint(1, 3)
        ref = " ".join(ws[i:i + k]).strip(".,;:()[]\"'")
        # spans made only of articles ("uma das") are compared with articles kept by the
        # metric and the matcher; the peer's plain normalisation cannot, so leave them out
        if len(normalize(ref)) > 3 and not all(w in ARTICLES for w in words(ref)):
            out[f"x{len(out)}"] = [ref]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default="data/amostra")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = Path(args.data)
    records = read_jsonl(data / "instructions.train.jsonl")
    articles = read_jsonl(data / "articles.jsonl")
    sample = {q.id: q.reference for q in load_questions("questions/amostra.jsonl") if q.reference}
    big_q = {**sample, **more_questions(articles, 1000 - len(sample))}
    cases = [("sample", sample, records), ("1000 questions", big_q, records),
             ("8x records", sample, records * 8), ("1000 q, 8x records", big_q, records * 8)]
    print(f"{'case':<22}{'questions':>10}{'records':>9}{'ours s':>9}{'peer s':>9}{'peer/ours':>10}")
    for name, qs, recs in cases:
        t_ours, t_peer = [], []
        for _ in range(args.repeats):  # interleaved: load changes hit both alike
            t0 = time.perf_counter()
            a = ours(qs, recs)
            t1 = time.perf_counter()
            b = peer(qs, recs)
            t2 = time.perf_counter()
            t_ours.append(t1 - t0)
            t_peer.append(t2 - t1)
            assert a == b, "the two methods disagree"
        mo, mp = statistics.median(t_ours), statistics.median(t_peer)
        print(f"{name:<22}{len(qs):>10}{len(recs):>9}{mo:>9.2f}{mp:>9.2f}{mp / mo:>9.1f}x")


if __name__ == "__main__":
    main()
