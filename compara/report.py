"""Summaries of a batch run: ``summary.json``, ``summary.csv``, ``report.html``, terminal table.

A run folder holds ``results.jsonl`` (one line per question × arm, see
:func:`core.metrics.score_answer` for the metrics). :func:`write_report` re-scores every
answer with the current metric definitions, summarises it per arm (mean of every metric with a
seeded 95% bootstrap interval over questions, latency median and p95, tokens/s, stopped-on-EOS
rate), per question type and per fact-exposure bin, compares the arms pairwise on the same
questions, and writes the three files atomically. :func:`print_summary` renders the per-arm
table with rich. The HTML page is built by :mod:`compara.report_html`.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from compara import runs
from compara.arms import DEFAULT_ARMS, arm_order, arm_pairs
from compara.config import EvalConfig
from core.exposure import Exposure, bin_labels, exposure_bin
from core.generation import FINISH_REASONS
from core.io import BadLine, atomic_write_json, atomic_writer, iter_jsonl
from core.metrics import (
    DISPLAY_ORDER,
    LABELS,
    MEASURE_METRICS,
    VALUE_METRICS,
    bootstrap_mean,
    paired_bootstrap,
    score_answer,
)

log = logging.getLogger(__name__)

PAIRED_METRICS = ("contains", "f1", *MEASURE_METRICS)
# Identity fields that must agree across arms for the comparison to be like for like.
SHARED_IDENTITY = ("base_model", "decoding")


# -- reading ------------------------------------------------------------------------------------

def run_arms(run_dir: str | Path) -> list[str]:
    """The arms of a run folder in the order its config listed them (run.json); [] when it
    does not say."""
    path = Path(run_dir) / runs.RUN
    try:
        arms = json.loads(path.read_text(encoding="utf-8")).get("arms")
    except (OSError, ValueError, AttributeError):
        return []
    return [str(a) for a in arms] if isinstance(arms, list) else []


NUMBER_FIELDS = ("latency_s", "tokens_per_s", "tokens_in", "tokens_out")


def _clean(rec: dict[str, Any]) -> list[str]:
    """Give a record's fields the types the summary and the page expect; say what was wrong."""
    wrong = []
    for name in NUMBER_FIELDS:
        v = rec.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            wrong.append(f"{name} is not a number ({v!r:.40})")
            rec[name] = None
    for name, tp in (("identity", dict), ("extra", dict), ("passages", list)):
        if rec.get(name) is not None and not isinstance(rec[name], tp):
            wrong.append(f"{name} is not a {'mapping' if tp is dict else 'list'}")
            rec[name] = tp()
    rec["passages"] = [p for p in rec.get("passages") or [] if isinstance(p, dict)]
    if rec.get("stopped_on_eos") is not None and not isinstance(rec["stopped_on_eos"], bool):
        wrong.append("stopped_on_eos is not true/false")
        rec["stopped_on_eos"] = None
    if rec.get("finish_reason") is not None and rec["finish_reason"] not in FINISH_REASONS:
        wrong.append(f"finish_reason is not one of {', '.join(FINISH_REASONS)}")
        rec["finish_reason"] = None
    if not isinstance(rec.get("answer"), str):
        rec["answer"] = "" if rec.get("answer") is None else str(rec["answer"])
    return wrong


def load_results(path: str | Path) -> tuple[list[dict], list[BadLine]]:
    """The records of a results.jsonl and the lines skipped or repaired (bad JSON, no question
    id or arm, fields of the wrong type, repeated question × arm: the last line wins, as a
    resumed run's newest answer)."""
    path = Path(path)
    problems: list[BadLine] = []
    latest: dict[tuple[str, str], dict] = {}
    where: dict[tuple[str, str], int] = {}
    for line, rec in iter_jsonl(path, on_error=problems.append):
        qid, arm = rec.get("question_id"), rec.get("arm")
        if qid is None or not isinstance(arm, str) or not arm:
            problems.append(BadLine(str(path), line, "no question_id or arm"))
            continue
        for wrong in _clean(rec):
            problems.append(BadLine(str(path), line, f"{wrong}: ignored"))
        key = (str(qid), arm)
        if key in latest:
            problems.append(BadLine(str(path), where[key],
                                    f"{key[0]} × {arm} repeated at line {line}; the later kept"))
            del latest[key]  # re-insert: order of the newest line
        latest[key] = rec
        where[key] = line
    return list(latest.values()), problems


# -- summary ------------------------------------------------------------------------------------

def _values(records: Sequence[Mapping[str, Any]], metric: str) -> list[Any]:
    if metric == "stopped_on_eos":
        return [r.get("stopped_on_eos") for r in records]
    if metric == "ended_cleanly":
        return [ended_cleanly(r) for r in records]
    return [(r.get("metrics") or {}).get(metric) for r in records]


def ended_cleanly(rec: Mapping[str, Any]) -> bool | None:
    """The answer ended on EOS or at a stop string, not cut at max_new_tokens (a record
    written before stop strings existed ended cleanly only on EOS)."""
    reason = rec.get("finish_reason")
    if reason is None:
        return rec.get("stopped_on_eos")
    return reason != "max_tokens"


def mc_chance(records: Iterable[Mapping[str, Any]]) -> float | None:
    """The multiple-choice accuracy of guessing over these records: the mean of 1 / choices
    (:func:`core.likelihood.chance_level` on stored records)."""
    levels = [1.0 / c for c in ((r.get("metrics") or {}).get("mc_choices") for r in records)
              if isinstance(c, int) and c > 0]
    return sum(levels) / len(levels) if levels else None


def _interval(values: Iterable[Any], cfg: EvalConfig) -> dict[str, Any]:
    return bootstrap_mean(values, cfg.bootstrap_resamples, cfg.confidence, cfg.seed).to_dict()


def _stats(values: Iterable[Any]) -> dict[str, Any]:
    import numpy as np

    vals = np.asarray([float(v) for v in values if v is not None], dtype=float)
    if not len(vals):
        return {"median": None, "p95": None, "n": 0}
    return {"median": float(np.median(vals)), "p95": float(np.percentile(vals, 95)),
            "n": int(len(vals))}


def _identity_checks(by_arm: Mapping[str, list[dict]]) -> tuple[dict[str, Any], list[str]]:
    identities, warnings = {}, []
    for arm, recs in by_arm.items():
        seen = Counter(json.dumps(r.get("identity") or {}, sort_keys=True) for r in recs)
        identities[arm] = json.loads(seen.most_common(1)[0][0])
        if len(seen) > 1:
            warnings.append(f"arm {arm}: answers come from {len(seen)} different configurations "
                            "(model, adapter, index, decoding or template changed during the run)")
    for name in SHARED_IDENTITY:
        values = {arm: json.dumps(ident.get(name), sort_keys=True)
                  for arm, ident in identities.items() if ident.get(name) is not None}
        if len(set(values.values())) > 1:
            which = ", ".join(f"{a}: {v}" for a, v in values.items())
            warnings.append(f"the arms differ in {name} ({which}): the comparison is not like "
                            "for like")
    return identities, warnings


def _exposure_count(rec: Mapping[str, Any], exposure: Mapping[str, Exposure] | None,
                    field: str) -> int | None:
    if exposure is not None:
        e = exposure.get(str(rec.get("question_id")))
        return getattr(e, field) if e is not None else None
    return (rec.get("metrics") or {}).get(f"exposure_{field}")


def _split_by(records: Sequence[dict], by_arm: Mapping[str, list[dict]], key, cfg: EvalConfig,
              ) -> dict[str, dict[str, Any]]:
    """Per value of ``key(record)`` (records whose key is None left out): per arm, n and the
    summary metrics with intervals."""
    out: dict[str, dict[str, Any]] = {}
    for value in sorted({key(r) for r in records} - {None}):
        out[value] = {}
        for arm, recs in by_arm.items():
            sel = [r for r in recs if key(r) == value]
            if sel:
                out[value][arm] = {"n": len(sel), "metrics": {
                    m: _interval(_values(sel, m), cfg) for m in DISPLAY_ORDER}}
    return out


def summarize(records: Sequence[dict], exposure: Mapping[str, Exposure] | None = None,
              cfg: EvalConfig | None = None, problems: Sequence[BadLine] = (),
              order: Sequence[str] = ()) -> dict[str, Any]:
    """The summary of records read by :func:`load_results` (those not scored yet are scored).

    ``order``: the arms in the order of the run's config (default: the usual four, then any
    other by name); the paired differences are ``eval.pairs``, else every pair in that order."""
    cfg = cfg or EvalConfig()
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if not r.get("metrics"):
            score_answer(r, exposure, keep_accents=cfg.keep_accents, measures=cfg.measures)
        by_arm[r["arm"]].append(r)
    arms = arm_order(by_arm, order or DEFAULT_ARMS)
    by_arm = {a: by_arm[a] for a in arms}
    identities, warnings = _identity_checks(by_arm)
    qsets = {a: {str(r["question_id"]) for r in recs} for a, recs in by_arm.items()}
    questions = set().union(*qsets.values()) if qsets else set()
    for arm, qs in qsets.items():
        if len(qs) < len(questions):
            warnings.append(f"arm {arm} answered {len(qs)} of {len(questions)} questions: its "
                            "means are over fewer questions than the others'")

    per_arm = {}
    for arm, recs in by_arm.items():
        per_arm[arm] = {
            "n": len(recs),
            "metrics": {m: _interval(_values(recs, m), cfg) for m in DISPLAY_ORDER},
            "latency_s": _stats(r.get("latency_s") for r in recs),
            "tokens_per_s": _stats(r.get("tokens_per_s") for r in recs),
            "tokens_out": _stats(r.get("tokens_out") for r in recs),
            "identity": identities[arm],
            "mc_chance": mc_chance(recs),
        }

    by_type = _split_by(records, by_arm, lambda r: r.get("type") or "(none)", cfg)
    # questions marked corpus (known only from these articles) or common (textbook knowledge)
    by_knowledge = _split_by(records, by_arm, lambda r: None if r.get("answerable") is False
                             else (r.get("extra") or {}).get("knowledge"), cfg)

    exposure_summary = None
    counts = {str(r["question_id"]): _exposure_count(r, exposure, cfg.exposure_count)
              for r in records}
    has_likelihood = any((r.get("metrics") or {}).get("ref_logprob") is not None
                         for r in records)
    if any(c is not None for c in counts.values()):
        labels = bin_labels(cfg.exposure_bins)
        bins: dict[str, Any] = {}
        for label in labels:
            qids = {q for q, c in counts.items()
                    if c is not None and exposure_bin(c, cfg.exposure_bins) == label}
            in_bin = {arm: [r for r in recs if str(r["question_id"]) in qids]
                      for arm, recs in by_arm.items()}
            bins[label] = {"questions": len(qids), "arms": {
                arm: _interval(_values(recs, "contains"), cfg) for arm, recs in in_bin.items()}}
            if has_likelihood:  # does the reference's likelihood rise with the times seen?
                bins[label]["ref_logprob"] = {
                    arm: _interval(_values(recs, "ref_logprob"), cfg)
                    for arm, recs in in_bin.items()}
        exposure_summary = {"count": cfg.exposure_count, "metric": "contains", "bins": bins,
                            "never_trained_on": bins.get("0", {}).get("questions", 0),
                            "questions": sum(c is not None for c in counts.values())}

    paired = []
    for a, b in arm_pairs(arms, cfg.pairs):  # arms present in the run only
        for m in PAIRED_METRICS:
            va = {str(r["question_id"]): (r.get("metrics") or {}).get(m) for r in by_arm[a]}
            vb = {str(r["question_id"]): (r.get("metrics") or {}).get(m) for r in by_arm[b]}
            if m in MEASURE_METRICS and not (any(v is not None for v in va.values())
                                             and any(v is not None for v in vb.values())):
                continue  # turned off, written before it existed, or not for arm b
            paired.append(paired_bootstrap(va, vb, cfg.bootstrap_resamples, cfg.confidence,
                                           cfg.seed, names=(a, b), metric=m).to_dict())

    return {
        "n_records": len(records), "n_questions": len(questions), "arms": arms,
        "metrics": list(DISPLAY_ORDER),
        "bootstrap": {"resamples": cfg.bootstrap_resamples, "confidence": cfg.confidence,
                      "seed": cfg.seed, "unit": "question"},
        "per_arm": per_arm, "by_type": by_type, "by_knowledge": by_knowledge,
        "exposure": exposure_summary, "paired": paired,
        "measures": {"enabled": list(cfg.measures), "distractors": cfg.distractors,
                     "chance_level": mc_chance(records)},
        "warnings": warnings, "problems": [str(p) for p in problems],
    }


# -- files --------------------------------------------------------------------------------------

CSV_STATS = ("latency_median_s", "latency_p95_s", "tokens_per_s_median", "mc_chance")


def summary_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Flat rows (scope, group, arm, n, every metric with lo/hi/n, speed): what summary.csv holds."""
    rows = []

    def row(scope: str, group: str, arm: str, n: int, metrics: Mapping[str, Any],
            speed: Mapping[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"scope": scope, "group": group, "arm": arm, "n": n}
        for m in DISPLAY_ORDER:
            iv = metrics.get(m) or {}
            out.update({m: iv.get("mean"), f"{m}_lo": iv.get("lo"), f"{m}_hi": iv.get("hi"),
                        f"{m}_n": iv.get("n")})
        speed = speed or {}
        out["latency_median_s"] = (speed.get("latency_s") or {}).get("median")
        out["latency_p95_s"] = (speed.get("latency_s") or {}).get("p95")
        out["tokens_per_s_median"] = (speed.get("tokens_per_s") or {}).get("median")
        out["mc_chance"] = speed.get("mc_chance")
        return out

    for arm, s in summary["per_arm"].items():
        rows.append(row("all", "", arm, s["n"], s["metrics"], s))
    for scope, key in (("type", "by_type"), ("knowledge", "by_knowledge")):
        for group, arms in (summary.get(key) or {}).items():
            for arm, s in arms.items():
                rows.append(row(scope, group, arm, s["n"], s["metrics"]))
    if summary.get("exposure"):
        for label, b in summary["exposure"]["bins"].items():
            for arm, iv in b["arms"].items():
                ivs = {"contains": iv}
                if (b.get("ref_logprob") or {}).get(arm):
                    ivs["ref_logprob"] = b["ref_logprob"][arm]
                rows.append(row("exposure", label, arm, iv["n"], ivs))
    return rows


def write_summary_csv(summary: Mapping[str, Any], path: str | Path) -> None:
    columns = ["scope", "group", "arm", "n"]
    for m in DISPLAY_ORDER:
        columns += [m, f"{m}_lo", f"{m}_hi", f"{m}_n"]
    columns += list(CSV_STATS)
    with atomic_writer(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in summary_rows(summary):
            writer.writerow({k: "" if v is None else (round(v, 6) if isinstance(v, float) else v)
                             for k, v in r.items()})


def rescore(records: Iterable[dict], exposure: Mapping[str, Exposure] | None = None,
            cfg: EvalConfig | None = None) -> list[dict]:
    """Score every record again with the current metric definitions (in place). Without
    ``exposure``, exposure counts already in a record's metrics are kept."""
    cfg = cfg or EvalConfig()
    records = list(records)
    for r in records:
        old = r.get("metrics") or {}
        kept = {k: old[k] for k in ("exposure_outputs", "exposure_records") if k in old}
        score_answer(r, exposure, keep_accents=cfg.keep_accents, measures=cfg.measures)
        if exposure is None:
            r["metrics"].update(kept)
    return records


def write_report(run_dir: str | Path, exposure: Mapping[str, Exposure] | None = None,
                 instructions: str | Path | None = None, cfg: EvalConfig | None = None,
                 title: str | None = None) -> dict[str, Any]:
    """Summarise ``run_dir/results.jsonl`` into summary.json, summary.csv and report.html.

    Fact exposure comes from ``exposure`` (question id → Exposure), else it is computed from
    ``instructions`` (the training JSONL) and saved as ``run_dir/exposure.jsonl``, else read
    from that file, else from the counts stored in the records' metrics; without any of them
    the report has no exposure section. Returns the summary, with the written paths under
    ``"files"``.
    """
    from compara.report_html import render_html
    from core.exposure import compute_exposure, read_exposure, write_exposure
    from core.io import InputError

    cfg = cfg or EvalConfig()
    run_dir = Path(run_dir)
    results = run_dir / runs.RESULTS
    if not results.is_file():
        raise InputError(f"{results}: no results in this run folder")
    records, problems = load_results(results)
    if not records:
        raise InputError(f"{results}: no valid result line"
                         + (f" ({problems[0]})" if problems else ""))
    for p in problems:
        log.warning("%s", p)
    saved = run_dir / runs.EXPOSURE
    if exposure is None and instructions is None and saved.is_file():
        exposure = read_exposure(saved)
    elif exposure is None and instructions is not None:
        seen: dict[str, dict[str, Any]] = {}
        for r in records:
            seen.setdefault(str(r["question_id"]), {"id": r["question_id"],
                                                    "reference": r.get("reference")})
        exposure = compute_exposure(seen.values(), instructions, cfg.keep_accents)
        write_exposure(saved, exposure)
    rescore(records, exposure, cfg)
    summary = summarize(records, exposure, cfg, problems, order=run_arms(run_dir))
    files = {"summary_json": run_dir / runs.SUMMARY, "summary_csv": run_dir / runs.SUMMARY_CSV,
             "report_html": run_dir / runs.REPORT}
    summary["files"] = {k: str(v) for k, v in files.items()}
    atomic_write_json(files["summary_json"], summary)
    write_summary_csv(summary, files["summary_csv"])
    html = render_html(records, summary, title=title or run_dir.name)
    with atomic_writer(files["report_html"]) as fh:
        fh.write(html)
    return summary


# -- terminal -----------------------------------------------------------------------------------

# Paired differences printed in the terminal (when the likelihood was measured): the text
# metric next to the measures that read what a model knows.
TABLE_PAIRED = ("contains", "ref_logprob", "mc_correct")
PAIRED_HEADERS = {"contains": "contains pts", "ref_logprob": "log-prob",
                  "mc_correct": "choice pts"}


def format_pct(iv: Mapping[str, Any] | None) -> str:
    """A mean in percent with its interval: "43% (35–53)"."""
    if not iv or iv.get("mean") is None:
        return "—"
    text = f"{100 * iv['mean']:.0f}%"
    if iv.get("lo") is not None and iv["lo"] != iv["hi"]:
        text += f" ({100 * iv['lo']:.0f}–{100 * iv['hi']:.0f})"
    return text


def format_value(iv: Mapping[str, Any] | None) -> str:
    """A mean that is not a share, with half its interval: "-2.31 ±0.20"."""
    if not iv or iv.get("mean") is None:
        return "—"
    text = f"{iv['mean']:.2f}"
    if iv.get("lo") is not None and iv["lo"] != iv["hi"]:
        text += f" ±{(iv['hi'] - iv['lo']) / 2:.2f}"
    return text


def format_metric(metric: str, iv: Mapping[str, Any] | None) -> str:
    return format_value(iv) if metric in VALUE_METRICS else format_pct(iv)


def format_diff(p: Mapping[str, Any]) -> str:
    """A paired difference and its interval; "*" when the interval leaves out zero."""
    if p.get("diff") is None:
        return "—"
    pct = 100 if p["metric"] not in VALUE_METRICS else 1
    digits = 0 if pct == 100 else 2
    text = f"{pct * p['diff']:+.{digits}f}"
    if p.get("lo") is not None and p["lo"] != p["hi"]:
        if p["lo"] > 0 or p["hi"] < 0:
            text += " *"
        text += f"\n({pct * p['lo']:+.{digits}f}, {pct * p['hi']:+.{digits}f})"
    return text


def print_summary(summary: Mapping[str, Any], console: Any = None, by_type: bool = False) -> None:
    """The per-arm table in the terminal: one column per arm (so four arms fit 80 columns),
    one row per metric (mean in percent and its interval), latency and tokens/s; then
    accuracy by fact exposure when known, and by question type with ``by_type``."""
    from rich.table import Table

    from core.logs import console as make_console

    console = console or make_console()
    arms = list(summary["per_arm"])
    conf = round(summary["bootstrap"]["confidence"] * 100)

    def table(title: str) -> Table:
        t = Table(title=title, title_justify="left", header_style="bold")
        t.add_column("")
        for arm in arms:
            t.add_column(arm, justify="right")
        return t

    main = table(f"{summary['n_questions']} questions — mean, in % for shares ({conf}% interval)")
    main.add_row("answers", *(str(summary["per_arm"][a]["n"]) for a in arms))
    for m in DISPLAY_ORDER:
        cells = [format_metric(m, summary["per_arm"][a]["metrics"].get(m)) for a in arms]
        if any(c != "—" for c in cells):
            main.add_row(LABELS[m], *cells)
        if m == "mc_correct" and any(c != "—" for c in cells):
            chance = [summary["per_arm"][a].get("mc_chance") for a in arms]
            main.add_row("  chance level", *("—" if c is None else f"{100 * c:.0f}%"
                                             for c in chance))
    lat = [summary["per_arm"][a]["latency_s"] for a in arms]
    if any(x["median"] is not None for x in lat):
        main.add_row("latency s med/p95", *("—" if x["median"] is None else
                                                   f"{x['median']:.2f} / {x['p95']:.2f}" for x in lat))
    tps = [summary["per_arm"][a]["tokens_per_s"] for a in arms]
    if any(x["median"] is not None for x in tps):
        main.add_row("tokens/s (median)", *("—" if x["median"] is None else f"{x['median']:.1f}"
                                            for x in tps))
    console.print(main)
    rows = {}
    for p in summary.get("paired") or []:
        if p["metric"] in TABLE_PAIRED and p.get("diff") is not None:
            rows.setdefault(f"{p['a']} − {p['b']}", {})[p["metric"]] = format_diff(p)
    if any("ref_logprob" in r for r in rows.values()):
        shown = [m for m in TABLE_PAIRED if any(m in r for r in rows.values())]
        t = Table(title=f"paired differences, same questions ({conf}% interval; * leaves out 0)",
                  title_justify="left", header_style="bold", show_lines=True)
        t.add_column("", no_wrap=True)
        for m in shown:
            t.add_column(PAIRED_HEADERS[m], justify="right")
        for pair, cells in rows.items():
            t.add_row(pair, *(cells.get(m, "—") for m in shown))
        console.print(t)

    exposure = summary.get("exposure")
    if exposure:
        what = "training outputs" if exposure["count"] == "outputs" else "training records"
        t = table(f"{exposure['metric']} by how often the answer was in the {what}")
        for label, b in exposure["bins"].items():
            if label == "0":  # always shown: parity before accuracy
                t.add_row(f"never trained on ({b['questions']})",
                          *(format_pct(b["arms"].get(a)) for a in arms))
            elif b["questions"]:
                t.add_row(f"seen {label}× ({b['questions']})",
                          *(format_pct(b["arms"].get(a)) for a in arms))
        console.print(t)
        if any(b.get("ref_logprob") for b in exposure["bins"].values()):
            t = table(f"reference log-prob per token by how often the answer was in the {what}")
            for label, b in exposure["bins"].items():
                if label == "0" or b["questions"]:
                    name = "never trained on" if label == "0" else f"seen {label}×"
                    t.add_row(f"{name} ({b['questions']})",
                              *(format_value((b.get("ref_logprob") or {}).get(a)) for a in arms))
            console.print(t)
    def split_table(title: str, groups: Mapping[str, Any], metric_of) -> None:
        t = table(title)
        for group, per in groups.items():
            n = max((s["n"] for s in per.values()), default=0)
            t.add_row(f"{group} ({n})", *(format_pct((per.get(a) or {}).get("metrics", {})
                                                     .get(metric_of(group))) for a in arms))
        console.print(t)

    if by_type:
        split_table("contains by question type (correct abstention where unanswerable)",
                    summary["by_type"],
                    lambda g: "abstained_correctly" if g == "unanswerable" else "contains")
    if summary.get("by_knowledge"):
        # answerable questions the model could only know from these articles, or from school
        split_table("contains by what the answer needs: corpus (these articles) or common knowledge",
                    summary["by_knowledge"], lambda g: "contains")
    for w in summary.get("warnings") or []:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
