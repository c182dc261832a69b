"""Knowledge parity: how much of the articles' prose, and how many question answers, the
instruction set carries — the measure behind "both paths hold the same facts".

    python bench/coverage.py                       # the sample and the prose fixtures
    python bench/coverage.py --dump DUMP --questions Q.jsonl

For each corpus: the share of prose sentences found whole in some training output, and the share
of the questions' answers (the ``contains`` test of core.metrics) found in at least one and in
three or more training outputs. The instruction set is made by the ingest code importable from
``--code`` (default: this checkout), so an older checkout can be measured the same way.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROSE = ROOT / "tests" / "fixtures" / "prose"
PROSE_TITLES = {"serra-azul": "Serra Azul do Turvo", "helena-ramos": "Helena Vasconcelos Ramos",
                "cheia-turvo": "Cheia do rio Turvo de 1931"}


def prose_articles() -> list[dict]:
    from ingest.wikitext import parse_wikitext

    out = []
    for stem, title in PROSE_TITLES.items():
        parsed = parse_wikitext((PROSE / f"{stem}.wiki").read_text(encoding="utf-8"), title)
        out.append({"id": len(out) + 1, "title": title, "text": parsed.text, "aliases": [],
                    "sections": [{"heading": s.heading, "level": s.level, "text": s.text}
                                 for s in parsed.sections],
                    "infobox_type": parsed.infobox_type, "infobox": parsed.infobox,
                    "categories": parsed.categories})
    return out


def measure(articles: list[dict], questions: list[dict]) -> dict:
    """Generate the instruction set with the importable ingest code and measure it."""
    from core.exposure import ReferenceMatcher

    inst = importlib.import_module("ingest.instructions")
    cfg = importlib.import_module("ingest.config").InstructionConfig()
    t0 = time.perf_counter()
    records = [r for split, r in inst.generate(articles, cfg) if split == "train"]
    seconds = time.perf_counter() - t0
    outputs = "\n".join(r["output"] for r in records)
    sentences = [s for a in articles for sec in a.get("sections") or []
                 for s in inst.sentences_of(inst._prose(sec.get("text") or ""))]  # tables aside
    in_outputs = sum(s in outputs for s in sentences)
    answerable = [q for q in questions if q.get("reference")]
    matcher = ReferenceMatcher({q["id"]: q["reference"] for q in answerable})
    counts = [0] * len(matcher.ids)
    for r in records:
        for qi in matcher.match(r["output"]):
            counts[qi] += 1
    n = len(counts) or 1
    return {"articles": len(articles), "train_records": len(records),
            "sentences": len(sentences), "sentences_in_outputs": round(in_outputs / max(1, len(sentences)), 3),
            "questions": len(counts), "answer_in_1plus": round(sum(c >= 1 for c in counts) / n, 3),
            "answer_in_3plus": round(sum(c >= 3 for c in counts) / n, 3),
            "generate_s": round(seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose ingest code makes the set")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    sys.path.insert(0, str(a.code.resolve()))
    from core.io import read_jsonl
    from ingest.config import IngestConfig
    from ingest.pipeline import run_ingest

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        run_ingest(ROOT / "data" / "sample" / "ptwiki-amostra-pages-articles.xml", Path(tmp) / "s",
                   IngestConfig())
        sample = read_jsonl(Path(tmp) / "s" / "articles.jsonl")
    rows["sample"] = measure(sample, read_jsonl(ROOT / "questions" / "amostra.jsonl"))
    rows["prose fixtures"] = measure(prose_articles(), read_jsonl(PROSE / "questions.jsonl"))
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"ingest code: {a.code.resolve()}")
    for name, r in rows.items():
        print(f"{name:15s} {r['articles']:3d} articles, {r['train_records']:5d} train records; "
              f"sentences in outputs {r['sentences_in_outputs']:.1%}; answers of {r['questions']} "
              f"questions in >=1 output {r['answer_in_1plus']:.1%}, in >=3 {r['answer_in_3plus']:.1%} "
              f"(generation {r['generate_s']} s)")


if __name__ == "__main__":
    main()
