"""Run reports from a hand-made results.jsonl: the numbers are the hand-computed means, the files
parse, the HTML is self-contained and escapes what the model wrote."""

import csv
import json
from html.parser import HTMLParser

import pytest
from rich.console import Console

from compara.config import EvalConfig
from compara.report import load_results, print_summary, summarize, write_report
from compara.report_html import highlight
from core.configbase import ConfigError
from core.exposure import Exposure
from core.io import write_jsonl

ARMS = ("base", "rag", "finetuned", "finetuned+rag")
IDENTITY = {"base_model": "gemma3-270m", "adapter": None, "index": None,
            "decoding": {"max_new_tokens": 128, "do_sample": False}, "template": "abc"}
QUESTIONS = {
    "q1": {"question": "Onde nasce o Rio Verde-Claro?", "reference": ["Serra do Lajeado"],
           "source_title": "Rio Verde-Claro", "answerable": True, "type": "infobox", "extra": {}},
    "q2": {"question": "Em que ano foi inaugurada a ponte?", "reference": ["1958"],
           "source_title": "Rio Verde-Claro", "answerable": True, "type": "section", "extra": {}},
    "q3": {"question": "Quantos gols marcou o artilheiro?", "reference": [],
           "source_title": "Vila Serena", "answerable": False, "type": "unanswerable",
           "extra": {"source_titles": ["Vila Serena"]}},
}
ANSWERS = {  # (answer, latency_s, tokens_per_s, stopped_on_eos)
    ("q1", "base"): ("Não sei.", 1.0, 10.0, True),
    ("q1", "rag"): ("Nasce na Serra do Lajeado [1].", 2.0, 20.0, True),
    ("q1", "finetuned"): ("O rio nasce na Serra do Lajeado.", 1.0, 30.0, True),
    ("q1", "finetuned+rag"): ("Serra do Lajeado", 2.0, 40.0, True),
    ("q2", "base"): ("Em 1960.", 2.0, 10.0, False),
    ("q2", "rag"): ("A ponte foi inaugurada em 1958.", 4.0, 20.0, True),
    ("q2", "finetuned"): ("1958", 1.0, 30.0, True),
    ("q2", "finetuned+rag"): ("<script>alert('x')</script> em 1958", 2.0, 40.0, False),
    ("q3", "base"): ("Foram 12 gols.", 3.0, 10.0, True),
    ("q3", "rag"): ("Os trechos não contêm a resposta.", 6.0, 20.0, True),
    ("q3", "finetuned"): ("Marcou 30 gols.", 1.0, 30.0, True),
    ("q3", "finetuned+rag"): ("Não há informação sobre isso.", 2.0, 40.0, True),
}
PASSAGES = {
    "q1": [{"rank": 1, "title": "Rio Verde-Claro", "section": "Geografia", "score": 0.9,
            "url": "https://pt.wikipedia.org/wiki/Rio_Verde-Claro",
            "text": "O rio nasce na Serra do Lajeado."}],
    "q2": [{"rank": 1, "title": "Outro <b>artigo</b>", "section": "", "score": 0.4,
            "url": "javascript:alert(1)", "text": "Nada sobre pontes."}],
    "q3": [{"rank": 1, "title": "Vila Serena", "section": "", "score": 0.7,
            "url": "https://pt.wikipedia.org/wiki/Vila_Serena", "text": "Vila Serena é um município."}],
}
# Hand-computed from the answers above.
EXPECTED = {
    "base": {"contains": 0.0, "em": 0.0, "abstained_correctly": 0.0, "support": None,
             "retrieval_hit": None, "stopped_on_eos": 2 / 3, "latency": (2.0, 2.9)},
    "rag": {"contains": 1.0, "em": 0.0, "abstained_correctly": 1.0, "support": 0.5,
            "retrieval_hit": 2 / 3, "stopped_on_eos": 1.0, "latency": (4.0, 5.8)},
    "finetuned": {"contains": 1.0, "em": 0.5, "abstained_correctly": 0.0, "support": None,
                  "retrieval_hit": None, "stopped_on_eos": 1.0, "latency": (1.0, 1.0)},
    "finetuned+rag": {"contains": 1.0, "em": 0.5, "abstained_correctly": 1.0, "support": 0.5,
                      "retrieval_hit": 2 / 3, "stopped_on_eos": 2 / 3, "latency": (2.0, 2.0)},
}


def make_records():
    records = []
    for (qid, arm), (answer, latency, tps, eos) in ANSWERS.items():
        rag = arm.endswith("rag")
        records.append({
            "key": f"{qid}-{arm}", "question_id": qid, "arm": arm, **QUESTIONS[qid],
            "answer": answer, "prompt": "...", "passages": PASSAGES[qid] if rag else [],
            "tokens_in": 100, "tokens_out": int(latency * tps), "latency_s": latency,
            "tokens_per_s": tps, "stopped_on_eos": eos,
            "identity": {**IDENTITY, "adapter": "ad" if arm.startswith("finetuned") else None,
                         "index": "ix" if rag else None},
            "metrics": {},
        })
    return records


@pytest.fixture
def run_dir(tmp_path):
    write_jsonl(tmp_path / "results.jsonl", make_records())
    return tmp_path


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.srcs, self.hrefs, self.tags = 0, [], [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "tr" and "question-row" in (attrs.get("class") or ""):
            self.rows += 1
        if "src" in attrs:
            self.srcs.append(attrs["src"])
        if tag == "a":
            self.hrefs.append(attrs.get("href"))


def test_report_files_hold_the_hand_computed_means(run_dir):
    summary = write_report(run_dir, cfg=EvalConfig(bootstrap_resamples=200))
    saved = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert saved["per_arm"] == json.loads(json.dumps(summary["per_arm"]))
    assert saved["arms"] == list(ARMS) and saved["n_questions"] == 3 and saved["n_records"] == 12
    for arm, exp in EXPECTED.items():
        s = saved["per_arm"][arm]
        assert s["n"] == 3
        for metric in ("contains", "em", "abstained_correctly", "support", "retrieval_hit",
                       "stopped_on_eos"):
            iv = s["metrics"][metric]
            if exp[metric] is None:
                assert iv["mean"] is None and iv["n"] == 0, (arm, metric)
            else:
                assert iv["mean"] == pytest.approx(exp[metric]), (arm, metric)
                assert iv["lo"] - 1e-12 <= iv["mean"] <= iv["hi"] + 1e-12, (arm, metric)
        assert s["metrics"]["contains"]["n"] == 2  # q3 has no reference
        assert s["metrics"]["abstained_correctly"]["n"] == 1
        assert (s["latency_s"]["median"], s["latency_s"]["p95"]) == pytest.approx(exp["latency"])
    assert saved["per_arm"]["rag"]["tokens_per_s"]["median"] == 20.0
    assert saved["by_type"]["section"]["finetuned"]["metrics"]["em"]["mean"] == 1.0
    assert saved["by_type"]["unanswerable"]["rag"]["metrics"]["contains"]["mean"] is None
    paired = {(p["a"], p["b"], p["metric"]): p for p in saved["paired"]}
    assert paired[("rag", "base", "contains")]["diff"] == 1.0
    assert paired[("finetuned+rag", "rag", "contains")]["diff"] == 0.0
    assert saved["exposure"] is None and not saved["warnings"] and not saved["problems"]
    # the stored results were re-scored, answers kept
    recs, problems = load_results(run_dir / "results.jsonl")
    assert len(recs) == 12 and not problems


def test_summary_csv_matches_the_json(run_dir):
    summary = write_report(run_dir, cfg=EvalConfig(bootstrap_resamples=100))
    with open(run_dir / "summary.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    overall = {r["arm"]: r for r in rows if r["scope"] == "all"}
    assert list(overall) == list(ARMS)
    for arm in ARMS:
        s = summary["per_arm"][arm]
        assert float(overall[arm]["contains"]) == pytest.approx(s["metrics"]["contains"]["mean"])
        assert float(overall[arm]["contains_lo"]) == pytest.approx(s["metrics"]["contains"]["lo"],
                                                                   abs=1e-6)
        assert int(overall[arm]["n"]) == 3
        assert float(overall[arm]["latency_p95_s"]) == pytest.approx(s["latency_s"]["p95"])
        assert float(overall[arm]["stopped_on_eos"]) == pytest.approx(
            EXPECTED[arm]["stopped_on_eos"], abs=1e-6)
    assert overall["base"]["support"] == ""  # not applicable
    assert {r["group"] for r in rows if r["scope"] == "type"} == {"infobox", "section",
                                                                  "unanswerable"}


def test_html_is_self_contained_escaped_and_has_one_row_per_question(run_dir):
    write_report(run_dir, cfg=EvalConfig(bootstrap_resamples=50))
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    assert page.rows == 3
    assert "script" not in page.tags and "<script>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "Outro &lt;b&gt;artigo&lt;/b&gt;" in text
    assert page.srcs and all(s.startswith("data:image/svg+xml;base64,") for s in page.srcs)
    assert "<link" not in text and "@import" not in text and "url(http" not in text
    assert page.hrefs == ["https://pt.wikipedia.org/wiki/Rio_Verde-Claro"] * 2 + [
        "https://pt.wikipedia.org/wiki/Vila_Serena"] * 2  # javascript: is never a link
    assert "<mark>Serra do Lajeado</mark>" in text and "<details>" in text


def test_exposure_bins_put_fine_tuned_accuracy_next_to_retrieval(run_dir):
    exposure = {"q1": Exposure("q1", records=6, outputs=4), "q2": Exposure("q2", 0, 0)}
    summary = write_report(run_dir, exposure=exposure, cfg=EvalConfig(bootstrap_resamples=50))
    bins = summary["exposure"]["bins"]
    assert bins["3–5"]["questions"] == 1 and bins["0"]["questions"] == 1
    assert bins["6–10"]["questions"] == 0
    assert bins["3–5"]["arms"]["finetuned"]["mean"] == 1.0
    assert bins["0"]["arms"]["base"]["mean"] == 0.0 and bins["0"]["arms"]["rag"]["mean"] == 1.0
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "in training: 4 outputs, 6 records" in text
    by_records = summarize(load_results(run_dir / "results.jsonl")[0], exposure,
                           EvalConfig(exposure_count="records", bootstrap_resamples=10))
    assert by_records["exposure"]["bins"]["6–10"]["questions"] == 1


def test_exposure_computed_from_the_training_file_is_saved_in_the_run(run_dir):
    train = run_dir / "instructions.train.jsonl"
    write_jsonl(train, [{"instruction": "Onde nasce?", "input": "",
                         "output": "Nasce na Serra do Lajeado.", "source_title": "Rio Verde-Claro",
                         "task": "infobox"}])
    summary = write_report(run_dir, instructions=train, cfg=EvalConfig(bootstrap_resamples=10))
    assert (run_dir / "exposure.jsonl").is_file()
    assert summary["exposure"]["bins"]["1–2"]["questions"] == 1  # q1
    again = write_report(run_dir, cfg=EvalConfig(bootstrap_resamples=10))  # read back
    assert again["exposure"] == summary["exposure"]


def test_seeded_report_is_reproducible(run_dir):
    first = write_report(run_dir, cfg=EvalConfig(bootstrap_resamples=100, seed=7))
    html_first = (run_dir / "report.html").read_bytes()
    second = write_report(run_dir, cfg=EvalConfig(bootstrap_resamples=100, seed=7))
    assert first == second
    assert (run_dir / "report.html").read_bytes() == html_first


def test_bad_and_repeated_lines_are_reported_and_the_newest_answer_kept(run_dir):
    path = run_dir / "results.jsonl"
    newer = make_records()[0] | {"answer": "Serra do Lajeado", "latency_s": 9.0}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("{broken\n")
        fh.write(json.dumps({"arm": "base"}) + "\n")
        fh.write(json.dumps(newer) + "\n")
        fh.write(json.dumps({"question_id": "q9", "arm": "base", "answer": 3, "latency_s": "lento",
                             "identity": "?", "passages": [{"title": "T"}, "x"]}) + "\n")
    summary = write_report(run_dir, cfg=EvalConfig(bootstrap_resamples=10))
    assert summary["n_records"] == 13
    assert summary["per_arm"]["base"]["metrics"]["contains"]["mean"] == 0.5
    assert summary["per_arm"]["base"]["latency_s"]["n"] == 3
    problems = "\n".join(summary["problems"])
    assert ":13: invalid JSON" in problems and ":14: no question_id" in problems
    assert "q1 × base repeated at line 15" in problems
    assert ":16: latency_s is not a number" in problems and ":16: identity is not" in problems
    assert (run_dir / "report.html").is_file()


def test_warnings_when_the_comparison_is_not_like_for_like(run_dir):
    records = make_records()
    records = [r for r in records if not (r["arm"] == "rag" and r["question_id"] == "q3")]
    for r in records:
        if r["arm"] == "finetuned":
            r["identity"] = {**r["identity"], "decoding": {"max_new_tokens": 64}}
    summary = summarize(records, cfg=EvalConfig(bootstrap_resamples=10))
    text = " | ".join(summary["warnings"])
    assert "arm rag answered 2 of 3 questions" in text
    assert "differ in decoding" in text


def test_missing_results_is_a_clear_error(tmp_path):
    from core.io import InputError

    with pytest.raises(InputError, match="no results"):
        write_report(tmp_path)


def test_print_summary_renders_every_arm(run_dir):
    summary = write_report(run_dir, exposure={"q1": Exposure("q1", 6, 4)},
                           cfg=EvalConfig(bootstrap_resamples=50))
    console = Console(record=True, width=80)
    print_summary(summary, console=console, by_type=True)
    out = console.export_text()
    for arm in ARMS:
        assert arm in out
    assert "contains" in out and "100%" in out and "seen 3–5×" in out and "unanswerable" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_highlight_marks_references_like_the_contains_metric():
    assert highlight("Nasce na serra do Lajeado, em Goiás.", ["Serra do Lajeado"]) == (
        "Nasce na <mark>serra do Lajeado</mark>, em Goiás.")
    assert highlight("Fundada por Estacio de Sa.", ["Estácio de Sá"]) == (
        "Fundada por <mark>Estacio de Sa</mark>.")
    assert highlight("Serra Lajeado", ["Serra do Lajeado"]) == "<mark>Serra Lajeado</mark>"
    assert highlight("<b>1958</b> e 19580", ["1958"]) == "&lt;b&gt;<mark>1958</mark>&lt;/b&gt; e 19580"
    assert highlight("x < y", []) == "x &lt; y"


def test_config_is_validated():
    with pytest.raises(ConfigError, match="exposure_bins"):
        EvalConfig(exposure_bins=[1, 2])
    with pytest.raises(ConfigError, match="confidence"):
        EvalConfig(confidence=1.5)
    assert EvalConfig.from_dict({"bootstrap_resamples": "500"}).bootstrap_resamples == 500


def test_summary_splits_by_knowledge_when_questions_say_it():
    from compara.report import summarize, summary_rows

    recs = []
    for i, (kind, hit) in enumerate([("corpus", 1), ("corpus", 0), ("common", 1), (None, 1)]):
        extra = {"knowledge": kind} if kind else {}
        for arm in ("base", "rag"):
            recs.append({"question_id": f"q{i}", "arm": arm, "question": "?", "reference": ["x"],
                         "answer": "x" if hit and arm == "rag" else "y", "type": "lead",
                         "answerable": True, "extra": extra})
    summary = summarize(recs)
    assert set(summary["by_knowledge"]) == {"corpus", "common"}  # unmarked questions left out
    corpus = summary["by_knowledge"]["corpus"]
    assert corpus["rag"]["n"] == 2 and corpus["rag"]["metrics"]["contains"]["mean"] == 0.5
    assert corpus["base"]["metrics"]["contains"]["mean"] == 0.0
    assert any(r["scope"] == "knowledge" and r["group"] == "common" for r in summary_rows(summary))


# -- measures without a judge -------------------------------------------------------------------

# (ref_logprob, mc_correct, mc_choices, similarity) per (question, arm) of the answerable ones:
# the fine-tuned arms find the reference likelier than the base arms on both questions.
MEASURED = {
    ("q1", "base"): (-4.0, 0.0, 4, 0.70), ("q2", "base"): (-3.0, 0.0, 4, 0.72),
    ("q1", "rag"): (-2.0, 1.0, 4, 0.90), ("q2", "rag"): (-2.5, 1.0, 3, 0.80),
    ("q1", "finetuned"): (-1.0, 1.0, 4, 0.85), ("q2", "finetuned"): (-0.5, 1.0, 4, 0.95),
    ("q1", "finetuned+rag"): (-1.5, 1.0, 4, 0.88), ("q2", "finetuned+rag"): (-1.0, 0.0, 4, 0.75),
}


def measured_records():
    records = make_records()
    for r in records:
        if (r["question_id"], r["arm"]) in MEASURED:
            lp, mc, choices, sim = MEASURED[(r["question_id"], r["arm"])]
            r["metrics"] = {"ref_logprob": lp, "ref_best": r["reference"][0], "mc_correct": mc,
                            "mc_rank": 1 if mc else 2, "mc_choices": choices, "similarity": sim}
    return records


def test_the_measures_are_summarised_with_intervals_pairs_and_chance(tmp_path):
    write_jsonl(tmp_path / "results.jsonl", measured_records())
    summary = write_report(tmp_path, exposure={"q1": Exposure("q1", 6, 4),
                                               "q2": Exposure("q2", 0, 0)},
                           cfg=EvalConfig(bootstrap_resamples=200))
    saved = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    per_arm = saved["per_arm"]
    lp = per_arm["finetuned"]["metrics"]["ref_logprob"]
    assert lp["mean"] == pytest.approx(-0.75) and lp["n"] == 2 and lp["lo"] <= -0.75 <= lp["hi"]
    assert per_arm["base"]["metrics"]["mc_correct"]["mean"] == 0.0
    assert per_arm["rag"]["metrics"]["similarity"]["mean"] == pytest.approx(0.85)
    assert per_arm["rag"]["mc_chance"] == pytest.approx((1 / 4 + 1 / 3) / 2)
    assert saved["measures"]["chance_level"] == pytest.approx((7 / 4 + 1 / 3) / 8)
    # kept through the re-scoring; the text measures computed by it
    assert per_arm["rag"]["metrics"]["portuguese"]["n"] >= 1
    assert per_arm["rag"]["metrics"]["faithfulness"]["n"] >= 1
    assert per_arm["base"]["metrics"]["faithfulness"]["n"] == 0  # not a retrieval arm
    paired = {(p["a"], p["b"], p["metric"]): p for p in saved["paired"]}
    diff = paired[("finetuned", "base", "ref_logprob")]
    assert diff["diff"] == pytest.approx(2.75) and diff["lo"] > 0  # both questions: +3, +2.5
    assert paired[("rag", "base", "mc_correct")]["diff"] == 1.0
    assert ("rag", "base", "faithfulness") not in paired  # base has no passages
    assert paired[("finetuned+rag", "rag", "faithfulness")]["n"] >= 1
    bins = saved["exposure"]["bins"]
    assert bins["0"]["ref_logprob"]["finetuned"]["mean"] == pytest.approx(-0.5)  # q2
    assert bins["3–5"]["ref_logprob"]["base"]["mean"] == pytest.approx(-4.0)    # q1
    with open(tmp_path / "summary.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    row = next(r for r in rows if r["scope"] == "all" and r["arm"] == "finetuned")
    assert float(row["ref_logprob"]) == pytest.approx(-0.75) and row["ref_logprob_lo"]
    assert float(next(r for r in rows if r["scope"] == "all" and r["arm"] == "rag")[
        "mc_chance"]) == pytest.approx(7 / 24, abs=1e-6)
    assert any(r["scope"] == "exposure" and r["ref_logprob"] for r in rows)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    for label in ("ref. log-prob", "multiple choice", "similarity", "chance level"):
        assert label in page
    parsed = Page()
    parsed.feed(page)
    alts = page.count('alt="bar chart of ')
    assert alts >= 5 + 1  # the metrics, each measure, by type, exposure ×2

    console = Console(record=True, width=80)
    print_summary(summary, console=console)
    out = console.export_text()
    assert "ref. log-prob" in out and "chance level" in out and "-0.75" in out
    assert "finetuned − base" in out and "*" in out  # the interval leaves out zero
    assert "reference log-prob per token by how often" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_a_run_written_before_the_measures_still_reports(run_dir):
    summary = write_report(run_dir, cfg=EvalConfig(bootstrap_resamples=50))
    assert summary["per_arm"]["rag"]["metrics"]["ref_logprob"]["mean"] is None
    assert summary["per_arm"]["rag"]["mc_chance"] is None
    assert not any(p["metric"] in ("ref_logprob", "mc_correct", "similarity")
                   for p in summary["paired"])
    console = Console(record=True, width=80)
    print_summary(summary, console=console)
    out = console.export_text()
    assert "log-prob" not in out
    assert "in Portuguese" in out  # computed from the text alone
    off = write_report(run_dir, cfg=EvalConfig(bootstrap_resamples=50, measures=[]))
    assert off["per_arm"]["rag"]["metrics"]["portuguese"]["mean"] is None
    with pytest.raises(ConfigError, match="eval.measures: unknown 'judge'"):
        EvalConfig(measures=["judge"])
