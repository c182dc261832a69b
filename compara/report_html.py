"""The self-contained HTML report of a run: one file, no external resource.

Inline CSS; plots drawn with matplotlib's object API (``matplotlib.figure.Figure``: no pyplot,
no global backend, safe inside a Streamlit server) and embedded as SVG data URIs in ``<img>``
tags, which also keeps each plot's internal ids to itself. Every piece of text from a run
(answers, questions, passages, titles, URLs) is untrusted and escaped; links are kept only
for http(s) URLs.
"""

from __future__ import annotations

import base64
import html
import io
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

from core.metrics import (
    ANSWER_METRICS,
    ARTICLES,
    BINARY,
    DISPLAY_ORDER,
    LABELS,
    MEASURE_METRICS,
    VALUE_METRICS,
    tokens,
)

ARM_COLORS = {"base": "#7f7f7f", "rag": "#1f77b4", "finetuned": "#ff7f0e",
              "finetuned+rag": "#2ca02c"}
_OTHER_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#d62728")
BAR_METRICS = DISPLAY_ORDER[:DISPLAY_ORDER.index("abstained_correctly") + 1]
# What each judge-free measure's plot says under its title.
MEASURE_NOTES = {
    "ref_logprob": "mean log-probability per token of the reference given the arm's prompt "
                   "(higher: the arm finds the right answer more likely)",
    "mc_correct": "the reference scores above every distractor",
    "similarity": "e5 cosine of answer and reference (compressed: compare arms, not levels)",
    "portuguese": "answers long enough to tell (3+ words) that are in Portuguese",
    "faithfulness": "share of the answer's content words found in its passages",
}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#666;margin:0 0 12px}
table{border-collapse:collapse;margin:6px 0}
th,td{border:1px solid #ddd;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f5f5f5}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.ci{color:#777;font-size:12px}
.warn{background:#fff4e0;border:1px solid #f0c36d;padding:6px 10px;margin:6px 0}
.plots img{max-width:100%;height:auto;display:block;margin:8px 0 18px}
table.answers{table-layout:fixed;width:100%}
table.answers td{word-wrap:break-word;overflow-wrap:anywhere}
table.answers td.q{width:22%}
.qid{font-weight:600;color:#555}.qtext{font-weight:600;margin:2px 0}
.small{font-size:12px;color:#555}
.answer{white-space:pre-wrap;margin-bottom:4px}
mark{background:#c8f7c5;padding:0 1px}
.b{display:inline-block;border-radius:3px;padding:0 4px;margin:1px;font-size:11px;background:#eee}
.b.ok{background:#d4f4d2}.b.miss{background:#f8d7d7}
details{margin-top:4px}summary{cursor:pointer;color:#1f5fa8}
.passage{margin:4px 0;padding:4px 6px;background:#fafafa;border-left:3px solid #ccc}
.ptext{white-space:pre-wrap;font-size:12px}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


# -- highlighting ---------------------------------------------------------------------------------

def _fold_char(c: str, keep_accents: bool) -> str:
    """One character folded like :func:`core.text.fold`, always one character long, so
    offsets in the folded text are offsets in the original."""
    out = c
    if not keep_accents:
        out = "".join(x for x in unicodedata.normalize("NFKD", c) if not unicodedata.combining(x))
    out = out.casefold()
    if len(out) == 1:
        return out
    low = c.lower()
    return low if len(low) == 1 else c


_SEP = r"\W+(?:(?:" + "|".join(sorted(map(re.escape, ARTICLES), key=len, reverse=True)) + r")\W+)*"


def _reference_regex(references: Iterable[str], keep_accents: bool) -> re.Pattern[str] | None:
    parts = []
    for ref in references:
        toks = tokens(ref, keep_accents)
        if not toks or all(t in ARTICLES for t in toks):
            continue
        parts.append(r"(?<!\w)" + _SEP.join(map(re.escape, toks)) + r"(?!\w)")
    if not parts:
        return None
    return re.compile("|".join(sorted(parts, key=len, reverse=True)))


def highlight(text: str, references: Iterable[str], keep_accents: bool = False) -> str:
    """``text`` escaped for HTML, with each occurrence of a reference (the ``contains`` test:
    case, accents, punctuation and articles ignored) wrapped in ``<mark>``."""
    text = unicodedata.normalize("NFC", text or "")
    pattern = _reference_regex(references or [], keep_accents)
    if pattern is None:
        return esc(text)
    folded = "".join(_fold_char(c, keep_accents) for c in text)
    out, pos = [], 0
    for m in pattern.finditer(folded):
        out.append(esc(text[pos:m.start()]))
        out.append(f"<mark>{esc(text[m.start():m.end()])}</mark>")
        pos = m.end()
    out.append(esc(text[pos:]))
    return "".join(out)


# -- plots --------------------------------------------------------------------------------------

def arm_colors(arms: Sequence[str]) -> dict[str, str]:
    others = iter(_OTHER_COLORS * (1 + len(arms) // len(_OTHER_COLORS)))
    return {a: ARM_COLORS.get(a) or next(others) for a in arms}


def _img(fig: Any, alt: str) -> str:
    """The figure as an <img> with an SVG data URI (text kept as text: small and crisp)."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "compara"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/svg+xml;base64,{data}">'


def _grouped_bars(groups: Sequence[str], series: Mapping[str, Sequence[Mapping | None]],
                  title: str, ylabel: str, alt: str, ylim: tuple[float, float] | None = (0, 1.05),
                  hline: tuple[float, str] | None = None) -> str | None:
    """Bars per group, one per arm, with interval whiskers; None when there is nothing to draw."""
    from matplotlib.figure import Figure

    if not groups or not any(iv and iv.get("mean") is not None
                             for ivs in series.values() for iv in ivs):
        return None
    colors = arm_colors(list(series))
    fig = Figure(figsize=(max(6.0, 1.1 * len(groups) * max(1, len(series)) / 2.5), 3.6))
    ax = fig.subplots()
    width = 0.8 / max(1, len(series))
    for k, (arm, ivs) in enumerate(series.items()):
        xs, ys, err_lo, err_hi = [], [], [], []
        for i, iv in enumerate(ivs):
            if iv and iv.get("mean") is not None:
                mean = iv["mean"]
                lo = mean if iv.get("lo") is None else iv["lo"]
                hi = mean if iv.get("hi") is None else iv["hi"]
                xs.append(i - 0.4 + width * (k + 0.5))
                ys.append(mean)
                err_lo.append(max(0.0, mean - lo))
                err_hi.append(max(0.0, hi - mean))
        ax.bar(xs, ys, width=width * 0.95, color=colors[arm], label=arm,
               yerr=[err_lo, err_hi], capsize=2, error_kw={"elinewidth": 0.8})
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    if ylim:
        ax.set_ylim(*ylim)
    if hline is not None:
        ax.axhline(hline[0], color="#444", linestyle="--", linewidth=1, label=hline[1])
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(4, len(series)), loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _img(fig, alt)


def plot_metrics(summary: Mapping[str, Any]) -> str | None:
    per_arm = summary["per_arm"]
    metrics = [m for m in BAR_METRICS
               if any(per_arm[a]["metrics"][m]["mean"] is not None for a in per_arm)]
    series = {a: [per_arm[a]["metrics"][m] for m in metrics] for a in per_arm}
    conf = round(summary["bootstrap"]["confidence"] * 100)
    labels = [LABELS[m].replace(" (", "\n(") for m in metrics]
    return _grouped_bars(labels, series,
                         f"Metrics per arm (mean, {conf}% bootstrap interval)", "mean",
                         "bar chart of each metric's mean per arm")


def plot_by_type(summary: Mapping[str, Any], metric: str = "contains") -> str | None:
    by_type = summary["by_type"]
    types = [t for t in by_type if any(
        s["metrics"][metric]["mean"] is not None for s in by_type[t].values())]
    series = {a: [(by_type[t].get(a) or {}).get("metrics", {}).get(metric) for t in types]
              for a in summary["arms"]}
    labels = [f"{t}\n(n={max((s['n'] for s in by_type[t].values()), default=0)})" for t in types]
    return _grouped_bars(labels, series, f"{metric} by question type", metric,
                         f"bar chart of {metric} per question type and arm")


def plot_exposure(summary: Mapping[str, Any]) -> str | None:
    exposure = summary.get("exposure")
    if not exposure:
        return None
    bins = {label: b for label, b in exposure["bins"].items() if b["questions"]}
    labels = [f"{'never trained on' if b == '0' else b + '×'}\n(n={bins[b]['questions']})" for b in bins]
    arms = summary["arms"]
    series = {a: [bins[b]["arms"].get(a) for b in bins] for a in arms}
    what = "training outputs" if exposure["count"] == "outputs" else "training records"
    return _grouped_bars(labels, series,
                         f"{exposure['metric']} by how often the answer was in the {what}",
                         exposure["metric"],
                         "bar chart of accuracy per fact-exposure bin and arm")


def plot_measure(summary: Mapping[str, Any], metric: str) -> str | None:
    """One judge-free measure per arm with its interval (multiple choice: chance level drawn)."""
    per_arm = summary["per_arm"]
    series = {a: [per_arm[a]["metrics"].get(metric)] for a in per_arm}
    conf = round(summary["bootstrap"]["confidence"] * 100)
    hline = None
    chance = (summary.get("measures") or {}).get("chance_level")
    if metric == "mc_correct" and chance is not None:
        hline = (chance, f"chance {chance:.0%}")
    note = MEASURE_NOTES.get(metric, "")
    return _grouped_bars([note.replace(" (", "\n(", 1)], series,
                         f"{LABELS[metric]} per arm (mean, {conf}% bootstrap interval)",
                         LABELS[metric], f"bar chart of {LABELS[metric]} per arm",
                         ylim=None if metric in VALUE_METRICS else (0, 1.05), hline=hline)


def plot_exposure_likelihood(summary: Mapping[str, Any]) -> str | None:
    """The reference's log-probability per fact-exposure bin: does it rise with training?"""
    exposure = summary.get("exposure")
    if not exposure or not any(b.get("ref_logprob") for b in exposure["bins"].values()):
        return None
    bins = {label: b for label, b in exposure["bins"].items() if b["questions"]}
    labels = [f"{'never trained on' if b == '0' else b + '×'}\n(n={bins[b]['questions']})"
              for b in bins]
    series = {a: [(bins[b].get("ref_logprob") or {}).get(a) for b in bins]
              for a in summary["arms"]}
    what = "training outputs" if exposure["count"] == "outputs" else "training records"
    return _grouped_bars(labels, series,
                         f"reference log-prob per token by how often the answer was in the {what}",
                         "log-prob / token",
                         "bar chart of reference likelihood per fact-exposure bin and arm",
                         ylim=None)


def plot_latency(records: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> str | None:
    from matplotlib.figure import Figure

    data = {a: [float(r["latency_s"]) for r in records
                if r.get("arm") == a and r.get("latency_s") is not None] for a in arms}
    data = {a: v for a, v in data.items() if v}
    if not data:
        return None
    colors = arm_colors(list(data))
    fig = Figure(figsize=(6.0, 3.2))
    ax = fig.subplots()
    box = ax.boxplot(list(data.values()), patch_artist=True, showfliers=True)
    for patch, arm in zip(box["boxes"], data, strict=True):
        patch.set_facecolor(colors[arm])
        patch.set_alpha(0.6)
    ax.set_xticks(range(1, len(data) + 1), list(data))
    ax.set_ylabel("seconds per answer")
    ax.set_title("Latency per arm", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    return _img(fig, "box plot of answer latency per arm")


# -- tables ---------------------------------------------------------------------------------------

def _iv_cell(iv: Mapping[str, Any] | None) -> str:
    if not iv or iv.get("mean") is None:
        return '<td class="num">—</td>'
    ci = ""
    if iv.get("lo") is not None and iv["lo"] != iv["hi"]:
        ci = f'<br><span class="ci">{iv["lo"]:.2f}–{iv["hi"]:.2f}</span>'
    return f'<td class="num" title="n={esc(iv.get("n"))}">{iv["mean"]:.3f}{ci}</td>'


def _summary_table(summary: Mapping[str, Any]) -> str:
    head = "".join(f"<th>{esc(LABELS[m])}</th>" for m in DISPLAY_ORDER)
    rows = []
    for arm, s in summary["per_arm"].items():
        lat, tps = s["latency_s"], s["tokens_per_s"]
        lat_cell = "—" if lat["median"] is None else f"{lat['median']:.2f} / {lat['p95']:.2f}"
        tps_cell = "—" if tps["median"] is None else f"{tps['median']:.1f}"
        rows.append(f"<tr><th>{esc(arm)}</th><td class=\"num\">{s['n']}</td>"
                    + "".join(_iv_cell(s["metrics"].get(m)) for m in DISPLAY_ORDER)
                    + f'<td class="num">{lat_cell}</td><td class="num">{tps_cell}</td></tr>')
    return (f"<table class=\"summary\"><thead><tr><th>arm</th><th>n</th>{head}"
            "<th>latency s<br>median / p95</th><th>tokens/s<br>median</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _measures_note(summary: Mapping[str, Any]) -> str:
    chance = (summary.get("measures") or {}).get("chance_level")
    if chance is None:
        return ""
    k = (summary.get("measures") or {}).get("distractors")
    return (f'<p class="small">{esc(LABELS["mc_correct"])}: the reference against up to {esc(k)} '
            f"distractors (references of other questions); chance level {chance:.0%}. "
            f"{esc(LABELS['ref_logprob'])}: nats per token, higher is better "
            "(docs/evaluation.md, measures without a judge).</p>")


def _paired_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for p in summary.get("paired") or []:
        if p["diff"] is None:
            continue
        ci = f"{p['lo']:+.3f} to {p['hi']:+.3f}" if p["lo"] is not None else ""
        rows.append(f"<tr><td>{esc(p['a'])} − {esc(p['b'])}</td><td>{esc(p['metric'])}</td>"
                    f"<td class=\"num\">{p['diff']:+.3f}</td><td class=\"num\">{ci}</td>"
                    f"<td class=\"num\">{p['n']}</td><td class=\"num\">"
                    f"{'' if p['p'] is None else format(p['p'], '.3f')}</td></tr>")
    if not rows:
        return ""
    return ("<table><thead><tr><th>arms</th><th>metric</th><th>difference</th><th>interval</th>"
            "<th>questions</th><th>bootstrap p</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _identity_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for arm, s in summary["per_arm"].items():
        ident = s.get("identity") or {}
        dec = ident.get("decoding")
        dec_text = ", ".join(f"{k}={v}" for k, v in dec.items()) if isinstance(dec, dict) else dec
        rows.append(f"<tr><th>{esc(arm)}</th><td>{esc(ident.get('base_model'))}</td>"
                    f"<td>{esc(ident.get('adapter'))}</td><td>{esc(ident.get('index'))}</td>"
                    f"<td>{esc(dec_text)}</td><td>{esc(ident.get('template'))}</td></tr>")
    return ("<table><thead><tr><th>arm</th><th>base model</th><th>adapter</th><th>index</th>"
            "<th>decoding</th><th>template</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>")


# -- answers side by side ----------------------------------------------------------------------

def _badge(label: str, value: Any, binary: bool) -> str:
    if value is None:
        return ""
    if binary:
        ok = bool(value)
        return f'<span class="b {"ok" if ok else "miss"}">{esc(label)} {"✓" if ok else "✗"}</span>'
    return f'<span class="b">{esc(label)} {float(value):.2f}</span>'


def _metric_badges(rec: Mapping[str, Any]) -> str:
    m = rec.get("metrics") or {}
    parts = [_badge(LABELS.get(k, k), m.get(k), k in BINARY)
             for k in (*ANSWER_METRICS, *MEASURE_METRICS)]
    if m.get("abstained_correctly") is not None:
        parts.append(_badge("abstained", m["abstained_correctly"], True))
    elif m.get("abstained"):
        parts.append('<span class="b miss">abstained</span>')
    if m.get("repetition"):
        parts.append(_badge("repetition", m["repetition"], False))
    speed = []
    if rec.get("latency_s") is not None:
        speed.append(f"{float(rec['latency_s']):.2f} s")
    if rec.get("tokens_out") is not None:
        speed.append(f"{esc(rec['tokens_out'])} tokens")
    if rec.get("tokens_per_s") is not None:
        speed.append(f"{float(rec['tokens_per_s']):.1f} tok/s")
    reason = rec.get("finish_reason") or (None if rec.get("stopped_on_eos") is None else
                                          "eos" if rec["stopped_on_eos"] else "max_tokens")
    if reason is not None:
        speed.append({"eos": "EOS", "stop_string": "stop string"}.get(reason, "cut at max tokens"))
    return "".join(parts) + (f'<div class="small">{" · ".join(speed)}</div>' if speed else "")


def _link(title: str, url: Any) -> str:
    if isinstance(url, str) and urlparse(url.strip()).scheme in ("http", "https"):
        return (f'<a href="{esc(url.strip())}" rel="noopener noreferrer" target="_blank">'
                f"{esc(title)}</a>")
    return esc(title)


def _passages(passages: Sequence[Mapping[str, Any]], refs: Sequence[str]) -> str:
    if not passages:
        return ""
    items = []
    for i, p in enumerate(passages, start=1):
        rank = p.get("rank", i)
        score = p.get("score")
        score_text = f" · score {float(score):.3f}" if isinstance(score, (int, float)) else ""
        section = f" — {esc(p.get('section'))}" if p.get("section") else ""
        items.append(f'<div class="passage"><div class="small">[{esc(rank)}] '
                     f"{_link(str(p.get('title') or ''), p.get('url'))}{section}{score_text}</div>"
                     f'<div class="ptext">{highlight(str(p.get("text") or ""), refs)}</div></div>')
    return f"<details><summary>passages ({len(passages)})</summary>{''.join(items)}</details>"


def _question_cell(rec: Mapping[str, Any]) -> str:
    refs = rec.get("reference") or []
    if isinstance(refs, str):
        refs = [refs]
    extra = rec.get("extra") or {}
    titles = [rec.get("source_title"), *(extra.get("source_titles") or [])]
    titles = list(dict.fromkeys(t for t in titles if t))
    m = rec.get("metrics") or {}
    lines = [f'<div class="qid">{esc(rec.get("question_id"))}'
             + (f" · {esc(rec.get('type'))}" if rec.get("type") else "") + "</div>",
             f'<div class="qtext">{esc(rec.get("question"))}</div>']
    if refs:
        lines.append('<div class="small">reference: '
                     + " | ".join(f"<mark>{esc(r)}</mark>" for r in refs) + "</div>")
    elif rec.get("answerable") is False:
        lines.append('<div class="small">unanswerable: the right answer is to decline</div>')
    if titles:
        lines.append(f'<div class="small">source: {esc(", ".join(map(str, titles)))}</div>')
    if m.get("exposure_outputs") == 0:
        lines.append('<div class="small"><b>never trained on</b>: the answer is in no training '
                     'output</div>')
    elif m.get("exposure_outputs") is not None:
        lines.append(f'<div class="small">in training: {esc(m["exposure_outputs"])} outputs, '
                     f'{esc(m.get("exposure_records"))} records</div>')
    return "".join(lines)


def _answer_rows(records: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> str:
    by_question: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in records:
        by_question.setdefault(str(r.get("question_id")), {})[str(r.get("arm"))] = r
    rows = []
    for qid, answers in by_question.items():
        first = next(iter(answers.values()))
        refs = first.get("reference") or []
        refs = [refs] if isinstance(refs, str) else refs
        cells = [f'<td class="q">{_question_cell(first)}</td>']
        for arm in arms:
            rec = answers.get(arm)
            if rec is None:
                cells.append('<td class="small">no answer</td>')
                continue
            cells.append(f'<td><div class="answer">{highlight(str(rec.get("answer") or ""), refs)}'
                         f"</div>{_metric_badges(rec)}{_passages(rec.get('passages') or [], refs)}"
                         "</td>")
        anchor = "q-" + re.sub(r"[^A-Za-z0-9_.-]", "_", qid)
        rows.append(f'<tr class="question-row" id="{esc(anchor)}">{"".join(cells)}</tr>\n')
    head = "".join(f"<th>{esc(a)}</th>" for a in arms)
    return (f'<table class="answers"><thead><tr><th class="q">question</th>{head}</tr></thead>'
            f"<tbody>\n{''.join(rows)}</tbody></table>")


def render_html(records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
                title: str = "run") -> str:
    """The whole report page as one string."""
    arms = summary["arms"]
    conf = round(summary["bootstrap"]["confidence"] * 100)
    notes = "".join(f'<div class="warn">{esc(w)}</div>' for w in summary.get("warnings") or [])
    problems = summary.get("problems") or []
    if problems:
        notes += ('<div class="warn">lines of results.jsonl skipped:<ul>'
                  + "".join(f"<li>{esc(p)}</li>" for p in problems[:50])
                  + (f"<li>… and {len(problems) - 50} more</li>" if len(problems) > 50 else "")
                  + "</ul></div>")
    plots = [plot_metrics(summary), *(plot_measure(summary, m) for m in MEASURE_METRICS),
             plot_latency(records, arms), plot_by_type(summary), plot_exposure(summary),
             plot_exposure_likelihood(summary)]
    paired = _paired_table(summary)
    return "\n".join([
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>compara — {esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>compara — {esc(title)}</h1>",
        f'<p class="meta">{summary["n_questions"]} questions × {len(arms)} arms '
        f"({esc(', '.join(arms))}); means with {conf}% bootstrap intervals over questions "
        f"({summary['bootstrap']['resamples']} resamples, seed {summary['bootstrap']['seed']}).</p>",
        notes,
        "<h2>Summary</h2>", _summary_table(summary), _measures_note(summary),
        "<h2>Arms</h2>", _identity_table(summary),
        ("<h2>Paired differences (same questions)</h2>" + paired) if paired else "",
        '<h2>Plots</h2><div class="plots">', "".join(p for p in plots if p), "</div>",
        "<h2>Answers</h2>", _answer_rows(records, arms),
        "</body></html>",
    ]) + "\n"
