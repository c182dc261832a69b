import pytest

from rag.evaluate import contains_answer, evaluate, is_answerable, score_question, summarise


def test_answer_match_ignores_accents_and_case_but_needs_whole_words():
    assert contains_answer("Ela era BOTÂNICA no Recife", ["botanica"])
    assert contains_answer("fundada em 1887.", ["1887"])
    assert not contains_answer("fundada em 18870", ["1887"])
    assert not contains_answer("o rio Paranaíba", ["Paraná"])
    assert contains_answer("Rio  Tocantins", ["rio tocantins"])
    assert not contains_answer("qualquer coisa", ["", "  "])


def test_answerable():
    assert is_answerable({"reference": ["x"]})
    assert is_answerable({"reference": "x"})
    assert not is_answerable({"reference": []})
    assert not is_answerable({"reference": ["x"], "answerable": False})


class P:
    def __init__(self, title, text):
        self.title, self.full_text = title, text


def test_metrics_on_a_tiny_known_case():
    ranked = [P("A", "nada"), P("B", "a resposta é 42"), P("C", "42 outra vez")]
    rows = []
    for q in ({"reference": ["42"], "source_title": "B"},   # answer at 2, title at 2
              {"reference": ["nada"], "source_title": "C"},  # answer at 1, title at 3
              {"reference": ["zzz"], "source_title": "Z"},   # never
              {"reference": [], "answerable": False}):       # left out
        rows.append({"answerable": is_answerable(q), "has_title": bool(q.get("source_title")),
                     "latency_s": 0.01, **score_question(q, ranked)})
    m = summarise(rows, [1, 3])
    assert m["answerable"] == 3 and m["unanswerable"] == 1
    assert m["answer_hit@1"] == pytest.approx(1 / 3)
    assert m["answer_hit@3"] == pytest.approx(2 / 3)
    assert m["title_hit@1"] == 0 and m["title_hit@3"] == pytest.approx(2 / 3)
    assert m["mrr"] == pytest.approx((1 / 2 + 1) / 3)
    assert m["latency_ms"]["median"] == pytest.approx(10)


class StubIndex:
    def __init__(self, ranked):
        self.ranked = ranked

    def search(self, query, k, retriever):
        return self.ranked[:k]

    def timed_search(self, query, k, retriever):
        return self.search(query, k, retriever), 0.002


def test_evaluate_reports_each_retriever_and_details():
    index = StubIndex([P("A", "Serra do Lajeado"), P("B", "1958")])
    qs = [{"id": "q1", "question": "onde?", "reference": ["serra do lajeado"], "source_title": "A"},
          {"id": "q2", "question": "quando?", "reference": ["1958"], "source_title": "B"},
          {"id": "q3", "question": "?", "reference": [], "answerable": False}]
    res = evaluate(index, qs, [1, 2], ["dense", "bm25"])
    for name in ("dense", "bm25"):
        m = res["retrievers"][name]
        assert m["answer_hit@1"] == 0.5 and m["answer_hit@2"] == 1.0 and m["unanswerable"] == 1
    assert [d["id"] for d in res["details"]] == ["q1", "q2", "q3"]
    assert res["details"][1]["dense"]["answer_rank"] == 2
