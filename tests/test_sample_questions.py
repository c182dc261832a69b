"""The shipped questions are fair to the shipped sample: every answerable question's answer is
in its source article (as `contains` scores it), no question gives its answer away, and every
question says whether it asks for textbook knowledge or for a fact only these articles hold."""

from __future__ import annotations

import pytest

from core.metrics import contains
from core.questions import load_questions

KNOWLEDGE = {"corpus", "common"}


@pytest.fixture(scope="module")
def questions(repo_root):
    qf = load_questions(repo_root / "questions/amostra.jsonl")
    assert not qf.problems, qf.problems
    return qf.questions


@pytest.fixture(scope="module")
def articles(sample_articles):
    """Title -> what a reader of the article sees: its text and its infobox values."""
    seen = {}
    for a in sample_articles:
        infobox = " \n ".join(str(v) for v in (a.get("infobox") or {}).values())
        seen[a["title"]] = f"{a['text']} \n {infobox}"
    return seen


def test_ids_are_unique(questions):
    ids = [q.id for q in questions]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_every_question_says_what_knowledge_it_needs(questions):
    wrong = {q.id: q.extra.get("knowledge") for q in questions
             if q.extra.get("knowledge") not in KNOWLEDGE}
    assert not wrong, f"knowledge must be one of {sorted(KNOWLEDGE)}: {wrong}"
    kinds = {q.extra["knowledge"] for q in questions if q.answerable}
    assert kinds == KNOWLEDGE  # both kinds are asked, so the comparison can split by them


def test_source_titles_name_articles_of_the_sample(questions, articles):
    missing = {q.id: [t for t in q.source_titles if t not in articles] for q in questions}
    missing = {k: v for k, v in missing.items() if v}
    assert not missing, f"source titles that are not articles of the sample: {missing}"


def test_every_answerable_question_has_its_answer_in_a_source_article(questions, articles):
    answerable = [q for q in questions if q.answerable]
    assert len(answerable) >= 90
    unsupported = [q.id for q in answerable
                   if not any(contains(articles.get(t, ""), q.reference) for t in q.source_titles)]
    assert not unsupported, f"no reference occurs in the source article(s) of {unsupported}"


def test_no_question_names_its_own_answer(questions):
    # `contains` would credit an answer that merely repeats the question
    leaks = [q.id for q in questions if q.reference and contains(q.question, q.reference)]
    assert not leaks, f"a reference occurs in the question itself: {leaks}"


def test_unanswerable_questions_have_no_reference_and_a_sample_article(questions, articles):
    unanswerable = [q for q in questions if q.answerable is False]
    assert len(unanswerable) >= 6
    assert all(q.reference == [] and q.source_title in articles for q in unanswerable)


# Right answers written the way people write them, and wrong or half answers, as `contains`
# scores them against the shipped references.
RIGHT = [
    ("B-26", "O Morro do Moco tem 2.620 metros."), ("B-26", "Tem 2620 m de altitude."),
    ("B-28", "O Pico do Fogo tem 2.829 metros."),
    ("B-31", "Foram 27.772 km² naquele ano."),
    ("B-23", "À família dos camelídeos."),
    ("A-18", "Nasceu em São Luís do Paraitinga."),
    ("A-29", "Ao governador Barbacena."),
    ("C-22", "No quinto canto."),
    ("C-26", "O Título 8."),
    ("C-10", "Dodô (Adolfo Nascimento) e Osmar Macêdo."),
    ("B-13", "O jaburu."),
]
WRONG = [
    ("B-01", "Em 1960."), ("C-07", "Em 2002."), ("C-29", "Em 1580."),  # a date is asked for
]


@pytest.mark.parametrize(("qid", "answer"), RIGHT)
def test_references_accept_right_answers_in_their_usual_forms(questions, qid, answer):
    q = next(q for q in questions if q.id == qid)
    assert contains(answer, q.reference) == 1.0


@pytest.mark.parametrize(("qid", "answer"), WRONG)
def test_references_refuse_half_answers(questions, qid, answer):
    q = next(q for q in questions if q.id == qid)
    assert contains(answer, q.reference) == 0.0
