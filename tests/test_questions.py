"""Question files: every format loads, every bad record is named with file and line and skipped."""

import logging

import pytest

from core.questions import Question, QuestionFileError, auto_id, load_questions, parse_question


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def test_shipped_question_files_load_with_their_extra_fields(repo_root, fixtures_dir):
    qf = load_questions(repo_root / "questions/amostra.jsonl")
    assert not qf.problems and len(qf) > 100
    ids = [q.id for q in qf]
    assert len(set(ids)) == len(ids)
    unanswerable = [q for q in qf if q.type == "unanswerable"]
    assert unanswerable and all(q.answerable is False and q.reference == [] for q in unanswerable)
    assert all(q.answerable is True and q.reference for q in qf if q.type != "unanswerable")
    multi = next(q for q in qf if "source_titles" in q.extra)
    assert len(multi.source_titles) >= 2 and multi.source_title in multi.source_titles
    tiny = load_questions(fixtures_dir / "questions.jsonl")
    assert tiny.questions[0].reference == ["Serra do Lajeado"]
    assert tiny.questions[0].to_dict()["question_id"] == "t-01"


def test_bad_jsonl_records_are_reported_by_line_and_the_rest_loads(tmp_path, caplog):
    lines = [
        '{"id": "a", "question": "Onde nasce o rio?", "reference": "Serra do Lajeado"}',
        '{"id": "b", "question": "sem fim"',                       # 2: invalid JSON
        '{"id": "c", "reference": ["x"]}',                        # 3: no question
        '{"id": "d", "question": "   "}',                         # 4: empty question
        '{"id": "e", "question": "Q?", "reference": {"x": 1}}',   # 5: wrong type
        '{"id": "a", "question": "Outra?"}',                      # 6: duplicate id
        '["not", "an", "object"]',                                # 7: not a mapping
        '{"id": "f", "question": "Q?", "answerable": "talvez"}',  # 8: bad flag
        '',
        '{"id": "g", "question": "Quando?", "reference": ["1958", "em 1958"], "nota": 3}',
    ]
    raw = "\n".join(lines).encode() + b'\n{"id": "h", "question": "Caf\xe9?"}\n'  # 11: latin-1
    path = write(tmp_path, "q.jsonl", raw)
    with caplog.at_level(logging.WARNING, logger="core.questions"):
        qf = load_questions(path)
    assert [q.id for q in qf] == ["a", "g"]
    assert qf.questions[1].reference == ["1958", "em 1958"] and qf.questions[1].extra == {"nota": 3}
    by_line = {p.line: p.reason for p in qf.problems}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8, 11]
    assert "invalid JSON" in by_line[2]
    assert "no 'question'" in by_line[3]
    assert "empty question" in by_line[4]
    assert "reference" in by_line[5]
    assert "duplicate id 'a'" in by_line[6] and "line 1" in by_line[6]
    assert "answerable" in by_line[8]
    assert "invalid UTF-8" in by_line[11] and "0xE9" in by_line[11]
    assert all(str(p).startswith(f"{path}:{p.line}:") for p in qf.problems)
    assert sum(str(path) in r.getMessage() for r in caplog.records) >= len(qf.problems)


def test_csv_with_semicolons_quotes_several_references_and_a_bad_row(tmp_path):
    content = (
        "\ufeffid;question;reference;source_title;answerable;nível\n"
        "c1;Quem liderou?;Deodoro da Fonseca | marechal Deodoro;Proclamação;;fácil\n"
        'c2;"Uma pergunta\nem duas linhas?";["1889"];;sim;\n'
        "c3;Demais;a;b;c;d;e\n"
        "\n"
        "c4;Sem resposta conhecida?;;;não;difícil\n"
    )
    qf = load_questions(write(tmp_path, "q.csv", content))
    assert [q.id for q in qf] == ["c1", "c2", "c4"]
    c1, c2, c4 = qf.questions
    assert c1.reference == ["Deodoro da Fonseca", "marechal Deodoro"]
    assert c1.extra == {"nível": "fácil"} and c1.answerable is True
    assert c2.question == "Uma pergunta\nem duas linhas?" and c2.reference == ["1889"]
    assert c4.answerable is False and c4.reference == []
    (bad,) = qf.problems
    assert bad.line == 5 and "row 3" in bad.reason and "7 fields" in bad.reason  # c2 spans 3-4


def test_csv_invalid_utf8_skips_only_that_row(tmp_path):
    raw = (b"question,reference\nPrimeira?,um\n" + b"Segunda \xff?,dois\n"
           + "Terceira?,três\n".encode())
    qf = load_questions(write(tmp_path, "q.csv", raw))
    assert [q.question for q in qf] == ["Primeira?", "Terceira?"]
    (bad,) = qf.problems
    assert bad.line == 3 and "invalid UTF-8" in bad.reason and "0xFF" in bad.reason


def test_csv_without_a_question_column_is_refused(tmp_path):
    with pytest.raises(QuestionFileError, match="no 'question' column"):
        load_questions(write(tmp_path, "q.csv", "pergunta,resposta\nA?,b\n"))


def test_yaml_list_and_mapping_forms_with_item_numbers(tmp_path):
    content = """
- id: y1
  question: Em que ano foi inaugurada a ponte?
  reference: 1958          # a number: kept as text
  type: section
- just a string
- question: Quem fundou a cidade?
  reference: [Estácio de Sá]
  source_titles: [Rio de Janeiro, Salvador (Bahia)]
- question: ""
"""
    qf = load_questions(write(tmp_path, "q.yaml", content))
    assert [q.reference for q in qf] == [["1958"], ["Estácio de Sá"]]
    assert qf.questions[1].source_titles == ["Rio de Janeiro", "Salvador (Bahia)"]
    assert qf.questions[1].id == auto_id("Quem fundou a cidade?")
    problems = {p.line: p.reason for p in qf.problems}
    assert problems[6].startswith("item 2:") and "mapping" in problems[6]
    assert problems[10].startswith("item 4:") and "empty question" in problems[10]
    wrapped = load_questions(write(tmp_path, "w.yml", "questions:\n  - question: Onde?\n"))
    assert [q.question for q in wrapped] == ["Onde?"]


def test_yaml_syntax_error_names_the_line(tmp_path):
    with pytest.raises(QuestionFileError, match=r"q\.yaml:3: invalid YAML"):
        load_questions(write(tmp_path, "q.yaml", "- question: a\n  reference: [x\n- question: b\n"))


def test_file_level_errors_are_clear(tmp_path):
    with pytest.raises(QuestionFileError, match="not found"):
        load_questions(tmp_path / "nada.jsonl")
    with pytest.raises(QuestionFileError, match="empty"):
        load_questions(write(tmp_path, "vazio.jsonl", "\n  \n"))
    with pytest.raises(QuestionFileError, match=r"unknown question file type '\.txt'.*\.jsonl"):
        load_questions(write(tmp_path, "q.txt", "Onde?\n"))
    with pytest.raises(QuestionFileError, match="no valid question.*line 1.*line 2"):
        load_questions(write(tmp_path, "ruim.jsonl", '{"x": 1}\n{"question": 5}\n'))


def test_long_questions_are_cut_with_a_warning_or_refused(tmp_path):
    long_q = "Qual " + "palavra " * 100 + "?"
    path = write(tmp_path, "q.jsonl", f'{{"id": "l", "question": "{long_q}"}}\n'
                                      '{"id": "s", "question": "Curta?"}\n')
    qf = load_questions(path, max_chars=50)
    q = qf.questions[0]
    assert len(q.question) <= 50 and long_q.startswith(q.question)
    assert not q.question.endswith(" ") and q.extra["truncated_from"] == len(long_q.strip())
    assert len(qf.warnings) == 1 and qf.warnings[0].line == 1 and not qf.problems
    refused = load_questions(path, max_chars=50, long="refuse")
    assert [q.id for q in refused] == ["s"] and "limit 50" in refused.problems[0].reason


def test_answerable_is_explicit_or_derived_and_never_contradicts_the_reference():
    assert parse_question({"question": "Q?", "reference": "x"}).answerable is True
    assert parse_question({"question": "Q?", "type": "unanswerable"}).answerable is False
    assert parse_question({"question": "Q?"}).answerable is None  # open: nothing to score
    assert parse_question({"question": "Q?", "answerable": "não"}).answerable is False
    with pytest.raises(ValueError, match="answerable is false but a reference"):
        parse_question({"question": "Q?", "reference": "x", "answerable": False})


def test_ids_are_stable_and_a_repeated_question_without_id_is_a_duplicate(tmp_path):
    path = write(tmp_path, "q.jsonl", '{"question": "Onde?"}\n{"question": "Quando?", "id": 7}\n'
                                      '{"question": "Onde?"}\n')
    first, second = load_questions(path), load_questions(path)
    assert [q.id for q in first] == [q.id for q in second] == [auto_id("Onde?"), "7"]
    assert first.problems[0].line == 3 and "duplicate id" in first.problems[0].reason


def test_question_round_trips_through_a_results_record():
    q = parse_question({"id": "m", "question": "Quem?", "reference": ["A", "B"],
                        "source_title": "T", "type": "multi", "source_titles": ["T", "U"]})
    record = {**q.to_dict(), "arm": "rag", "answer": "..."}
    assert Question.from_record(record) == q
