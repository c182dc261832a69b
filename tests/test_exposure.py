"""Fact exposure: the matcher agrees with the contains metric, counts records and outputs, and
stays a single pass over the training set."""

import logging
import time

import pytest

from core.exposure import (
    Exposure,
    ReferenceMatcher,
    bin_labels,
    compute_exposure,
    exposure_bin,
    read_exposure,
    write_exposure,
)
from core.io import InputError, read_jsonl, write_jsonl
from core.metrics import normalize
from core.questions import load_questions, parse_question


def rec(instruction="", output="", input=""):
    return {"instruction": instruction, "input": input, "output": output,
            "source_title": "T", "task": "infobox"}


RECORDS = [
    rec("Onde nasce o Rio Verde-Claro?", "O Rio Verde-Claro nasce na Serra do Lajeado."),
    rec("O que fica na Serra do Lajeado?", "Uma nascente."),           # instruction only
    rec("Fale do rio.", "Nasce na serra lajeado, em Goiás."),           # articles, case ignored
    rec("Fale do rio.", "O povo lajeadoense vive na serra."),           # not whole words
    rec("Quando?", "A ponte foi inaugurada em 1958.", input="Contexto: 19580"),
    rec("Quando?", "Em 19580."),                                         # no whole-word 1958
    rec("Quantos?", "Ele teve um filho."),
]
QUESTIONS = [
    parse_question({"id": "serra", "question": "Onde nasce?", "reference": "Serra do Lajeado"}),
    parse_question({"id": "ano", "question": "Quando?", "reference": ["1958", "em 1958"]}),
    parse_question({"id": "um", "question": "Quantos filhos?", "reference": "um"}),
    parse_question({"id": "nada", "question": "E isto?", "reference": "Tocantins"}),
    parse_question({"id": "x", "question": "Sem resposta?", "answerable": False}),
]


def test_counts_in_any_field_and_in_outputs():
    ex = compute_exposure(QUESTIONS, RECORDS)
    assert ex["serra"] == Exposure("serra", records=3, outputs=2)
    assert ex["ano"] == Exposure("ano", records=1, outputs=1)  # counted once per record
    assert ex["um"] == Exposure("um", records=1, outputs=1)
    assert ex["nada"] == Exposure("nada", records=0, outputs=0)
    assert "x" not in ex  # nothing to look for


def test_matcher_agrees_with_whole_word_search_on_the_sample(sample_ingest, repo_root):
    """An independent check: normalised strings and substring search with spaces as borders."""
    questions = load_questions(repo_root / "questions/amostra.jsonl").questions
    records = read_jsonl(sample_ingest / "instructions.train.jsonl")
    ex = compute_exposure(questions, records)
    assert len(ex) == sum(1 for q in questions if q.reference)
    outputs = [f" {normalize(r['output'])} " for r in records]
    fields = [[f" {normalize(r[k])} " for k in ("instruction", "input", "output") if r[k]]
              for r in records]
    for q in questions:
        if not q.reference:
            continue
        needles = [f" {normalize(ref)} " for ref in q.reference]
        assert ex[q.id].outputs == sum(any(n in o for n in needles) for o in outputs), q.id
        assert ex[q.id].records == sum(any(n in f for n in needles for f in fs)
                                       for fs in fields), q.id
    assert any(e.outputs > 0 for e in ex.values())


def test_fast_on_a_big_set_without_growing_with_the_questions():
    """300 questions × 20 000 records: one pass, not 6 million whole-word searches."""
    questions = [{"id": f"q{i}", "reference": [f"fato número {i}", f"valor {i}"]}
                 for i in range(300)]
    records = [rec(f"Pergunta {j}?", f"O fato número {j % 500} foi registrado em {j}.")
               for j in range(20_000)]
    start = time.perf_counter()
    ex = compute_exposure(questions, records)
    elapsed = time.perf_counter() - start
    assert ex["q7"].outputs == 40 and ex["q299"].outputs == 40
    assert elapsed < 20, f"exposure took {elapsed:.1f} s"


def test_matcher_returns_every_question_a_text_answers():
    m = ReferenceMatcher({"a": ["Rio Tocantins"], "b": ["Tocantins"], "c": ["Goiás"]})
    assert len(m) == 3
    assert {m.ids[i] for i in m.match("Deságua no rio Tocantins, em Goiás")} == {"a", "b", "c"}
    assert m.match("tocantinense") == set()


def test_instruction_file_with_a_bad_line_is_read_with_a_warning(tmp_path, caplog):
    path = tmp_path / "instructions.train.jsonl"
    write_jsonl(path, RECORDS[:2])
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("{not json\n")
    with caplog.at_level(logging.WARNING, logger="core.exposure"):
        ex = compute_exposure(QUESTIONS[:1], path)
    assert ex["serra"].records == 2
    assert any(":3:" in r.getMessage() for r in caplog.records)


def test_bins():
    assert bin_labels() == ["0", "1–2", "3–5", "6–10", "11+"]
    assert [exposure_bin(n) for n in (0, 1, 2, 3, 5, 6, 10, 11, 500)] == [
        "0", "1–2", "1–2", "3–5", "3–5", "6–10", "6–10", "11+", "11+"]
    assert exposure_bin(None) is None
    assert [exposure_bin(n, (0, 1)) for n in (0, 1, 7)] == ["0", "1+", "1+"]


def test_saved_exposure_round_trips_and_bad_lines_are_named(tmp_path):
    ex = compute_exposure(QUESTIONS, RECORDS)
    path = tmp_path / "exposure.jsonl"
    write_exposure(path, ex)
    assert read_exposure(path) == ex
    path.write_text('{"question_id": "a", "records": 1, "outputs": 1}\n{"question_id": "b"}\n')
    with pytest.raises(InputError, match=r"exposure\.jsonl:2"):
        read_exposure(path)
