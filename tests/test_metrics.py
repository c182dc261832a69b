"""Metrics on hand-computed cases: Portuguese normalisation, SQuAD EM/F1, contains, ROUGE-L,
repetition, abstention, retrieval support and the bootstrap intervals."""

import random

import pytest

from core.exposure import Exposure
from core.metrics import (
    bootstrap_mean,
    contains,
    exact_match,
    is_abstention,
    normalize,
    paired_bootstrap,
    repetition_rate,
    retrieval_hit,
    rouge_l,
    score_answer,
    support,
    token_f1,
    tokens,
)
from core.prompts import RagTemplate
from core.text import contains_answer


def test_normalisation_drops_case_accents_punctuation_and_portuguese_articles():
    assert tokens("O Rio Tocantins, às margens!") == ["rio", "tocantins", "margens"]
    assert normalize("Pelos campos da Serra do Mar; numa manhã") == "campos serra mar manha"
    assert normalize("  Ação  e   reação ") == "acao e reacao"
    assert normalize("Ação", keep_accents=True) == "ação"
    # a text made only of articles keeps them instead of vanishing ("um" may be the answer)
    assert tokens("Um") == ["um"] and tokens("A") == ["a"]


def test_a_reference_made_of_articles_is_compared_with_articles_kept():
    assert exact_match("Um.", "um") == 1.0
    assert contains("Ele teve um filho.", "um") == 1.0
    assert contains("Ele teve dois filhos.", "um") == 0.0
    assert token_f1("um filho", "um") == pytest.approx(2 / 3)


# The SQuAD v1.1 evaluation's own cases, adapted: the English article "the" becomes "os".
@pytest.mark.parametrize("prediction, references, em, f1", [
    ("Denver Broncos", ["Denver Broncos"], 1.0, 1.0),
    ("os Denver Broncos", ["Denver Broncos"], 1.0, 1.0),          # articles ignored
    ("Denver Broncos defeated", ["Denver Broncos"], 0.0, 0.8),    # p 2/3, r 1
    ("L", ["Super Bowl L", "L"], 1.0, 1.0),                       # best reference
    ("Super Bowl 50", ["Super Bowl L", "L"], 0.0, 2 / 3),         # p 2/3, r 2/3
    ("Carolina Panthers", ["Denver Broncos"], 0.0, 0.0),
    ("Foi no rio Tocantins.", ["o Rio Tocantins"], 0.0, 0.8),      # "no" is an article
    ("são paulo são paulo", ["São Paulo"], 0.0, 2 / 3),           # counts are clipped
])
def test_exact_match_and_token_f1(prediction, references, em, f1):
    assert exact_match(prediction, references) == em
    assert token_f1(prediction, references) == pytest.approx(f1)


def test_no_reference_means_no_correctness_score():
    assert exact_match("x", []) is None and token_f1("x", None) is None
    assert contains("x", [" "]) is None and rouge_l("x", []) is None


def test_contains_is_whole_words_after_normalisation():
    assert contains("Foi fundada por Estácio de Sá em 1565.", ["Estacio de Sa"]) == 1.0
    assert contains("A ponte é de 19580.", "1958") == 0.0          # whole words only
    assert contains("Nasce na Serra Lajeado.", "Serra do Lajeado") == 1.0  # articles ignored
    assert contains("Lajeado, na serra", "Serra do Lajeado") == 0.0       # order matters
    assert contains("Deodoro!", ["Getúlio Vargas", "deodoro"]) == 1.0
    assert contains("", "1958") == 0.0


def test_contains_finds_everything_the_plain_matcher_finds():
    rng = random.Random(0)
    vocab = "o rio da serra do lajeado nasce em 1958 a ponte de são paulo foi um".split()
    for _ in range(500):
        answer = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 12)))
        ref = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 3)))
        if contains_answer(answer, ref):
            assert contains(answer, ref) == 1.0, (answer, ref)


def test_rouge_l_is_the_lcs_f_measure():
    # [rio nasce serra lajeado] vs [serra lajeado]: LCS 2, p 2/4, r 1 → 2/3
    assert rouge_l("O rio nasce na Serra do Lajeado", "Serra do Lajeado") == pytest.approx(2 / 3)
    # order matters for ROUGE-L, not for bag-of-words F1: LCS 1, p = r = 1/2
    assert rouge_l("Lajeado Serra", "Serra Lajeado") == pytest.approx(0.5)
    assert token_f1("Lajeado Serra", "Serra Lajeado") == 1.0
    assert rouge_l("nada a ver", ["outra coisa", "ver nada"]) == pytest.approx(0.5)


def test_repetition_rate_is_the_share_of_repeated_trigrams():
    # 9 words → 7 trigrams, 3 distinct → 4/7 repeated
    assert repetition_rate("rio verde claro rio verde claro rio verde claro") == pytest.approx(4 / 7)
    assert repetition_rate("O rio nasce na serra e deságua no Tocantins.") == 0.0
    assert repetition_rate("Paris") == 0.0 and repetition_rate("") == 0.0


@pytest.mark.parametrize("answer", [
    RagTemplate.load().abstain,
    "Não sei.",
    "Não encontrei essa informação nos trechos.",
    "Não há informações sobre a cor dos olhos de Zumbi.",
    "Com base nos trechos fornecidos, não é possível responder a essa pergunta.",
    "O texto fornecido não menciona quantos dentes ele extraiu.",
    "Desculpe, não consigo responder.",
    "A informação não está disponível.",
    "NÃO SEI",
])
def test_abstentions_are_recognised(answer):
    assert is_abstention(answer)


@pytest.mark.parametrize("answer", [
    "Joaquim José da Silva Xavier.",
    "Ele não tem filhos.",
    "A cidade não fica no litoral; fica no planalto.",
    "",
    "Tiradentes foi um dentista e militar. " * 10 + "Não sei mais nada.",  # past the scan
])
def test_answers_are_not_abstentions(answer):
    assert not is_abstention(answer)


def test_extra_abstain_phrases():
    assert not is_abstention("Pergunta fora do meu alcance.")
    assert is_abstention("Pergunta fora do meu alcance.", phrases=["fora do meu alcance"])


def test_support_and_retrieval_hit():
    passages = [{"title": "Rio Verde-Claro", "section": "Geografia",
                 "text": "O rio nasce na Serra do Lajeado."},
                {"title": "Goiás", "section": "", "text": "Estado do Centro-Oeste."}]
    assert support(["Serra do Lajeado"], passages) == 1.0
    assert support(["Goiás"], passages) == 1.0                 # the title is shown to the model
    assert support(["Tocantins"], passages) == 0.0
    assert support([], passages) is None
    assert retrieval_hit(passages, ["rio verde-claro"]) == 1.0  # case ignored
    assert retrieval_hit(passages, ["Tocantins", "Goiás"]) == 1.0
    assert retrieval_hit(passages, ["Tocantins"]) == 0.0
    assert retrieval_hit([], ["Tocantins"]) == 0.0
    assert retrieval_hit(passages, [None, ""]) is None


def record(arm="base", answer="", reference=("Serra do Lajeado",), passages=(), **kw):
    rec = {"question_id": "q1", "arm": arm, "question": "Onde nasce o Rio Verde-Claro?",
           "reference": list(reference), "source_title": "Rio Verde-Claro", "answerable": True,
           "type": "infobox", "extra": {}, "answer": answer, "passages": list(passages),
           "metrics": {}}
    rec.update(kw)
    return rec


def test_score_answer_fills_the_metrics_with_none_where_not_applicable():
    rec = record("base", "Nasce na Serra do Lajeado.")
    m = score_answer(rec)
    assert rec["metrics"] is m
    assert m["contains"] == 1.0 and m["em"] == 0.0 and m["f1"] == pytest.approx(0.8)
    assert m["support"] is None and m["retrieval_hit"] is None
    assert m["abstained"] is False and m["abstained_correctly"] is None
    assert set(m) == {"em", "f1", "contains", "rouge_l", "repetition", "abstained",
                      "abstained_correctly", "support", "retrieval_hit", "portuguese",
                      "faithfulness"}
    assert m["portuguese"] is True and m["faithfulness"] is None  # no passages: not a RAG arm
    assert set(score_answer(record("base", "x"), measures=[])) == {
        "em", "f1", "contains", "rouge_l", "repetition", "abstained", "abstained_correctly",
        "support", "retrieval_hit"}


def test_score_answer_adds_the_text_measures_and_keeps_the_model_ones():
    passage = {"rank": 1, "title": "Rio Verde-Claro", "section": "",
               "text": "O rio nasce na Serra do Lajeado, no leste do estado."}
    rec = record("rag", "O rio nasce na Serra do Lajeado e corre para o mar.",
                 passages=[passage], metrics={"ref_logprob": -1.5, "mc_correct": 1.0,
                                              "mc_choices": 4, "similarity": 0.9, "em": 7})
    m = score_answer(rec, measures=["faithfulness", "language"])
    # content words: rio, nasce, serra, lajeado, corre, mar; the last two not in the passage
    assert m["faithfulness"] == pytest.approx(4 / 6)
    assert m["portuguese"] is True
    assert (m["ref_logprob"], m["mc_correct"], m["mc_choices"], m["similarity"]) == \
        (-1.5, 1.0, 4, 0.9)  # written by the batch runner, kept through a re-scoring
    assert m["em"] == 0.0  # a text metric is computed again
    assert score_answer(record("rag", "The river rises in the hills of the east.",
                               passages=[passage]))["portuguese"] is False


def test_retrieval_arms_get_support_and_hit_even_without_passages():
    # an arm retrieves when its identity names an index (whatever its name), so a prompt cut
    # down to no passage still counts as a miss of retrieval
    passage = {"rank": 1, "title": "Rio Verde-Claro", "section": "", "score": 0.9,
               "text": "Nasce na Serra do Lajeado."}
    m = score_answer(record("rag", "Serra do Lajeado", passages=[passage]))
    assert (m["em"], m["support"], m["retrieval_hit"]) == (1.0, 1.0, 1.0)
    m = score_answer(record("ft-reader", "Serra do Lajeado", passages=[],
                            identity={"index": "6f1c", "retrieval": {"k": 4}}))
    assert (m["support"], m["retrieval_hit"]) == (0.0, 0.0)
    m = score_answer(record("finetuned", "Serra do Lajeado", passages=[],
                            identity={"index": None}))
    assert (m["support"], m["retrieval_hit"]) == (None, None)
    m = score_answer(record("rag", "x", passages=[passage],
                            extra={"source_titles": ["Goiás", "Rio Verde-Claro"]},
                            source_title="Goiás"))
    assert m["retrieval_hit"] == 1.0


def test_abstaining_is_right_only_when_the_question_is_unanswerable():
    declines = "Os trechos não contêm a resposta sobre a serra."
    m = score_answer(record("rag", declines, reference=[], answerable=False))
    assert m["abstained"] is True and m["abstained_correctly"] is True
    assert m["em"] is None and m["contains"] is None and m["support"] is None
    m = score_answer(record("rag", "Foram 12 gols.", reference=[], answerable=False))
    assert m["abstained_correctly"] is False
    # answerable: declining is a miss even though it shares a word with the reference
    assert token_f1(declines, "Serra do Lajeado") > 0
    m = score_answer(record("base", declines))
    assert m["abstained"] is True and m["abstained_correctly"] is None
    assert (m["em"], m["f1"], m["contains"], m["rouge_l"]) == (0.0, 0.0, 0.0, 0.0)
    # a hedge that still gives the answer keeps its credit
    m = score_answer(record("base", "Não sei ao certo, mas creio que na Serra do Lajeado."))
    assert m["abstained"] is True and m["contains"] == 1.0


def test_exposure_is_added_when_given():
    m = score_answer(record(), exposure={"q1": Exposure("q1", records=5, outputs=3)})
    assert (m["exposure_outputs"], m["exposure_records"]) == (3, 5)
    m = score_answer(record(question_id="q9"), exposure={"q1": Exposure("q1", 5, 3)})
    assert m["exposure_outputs"] is None


def test_bootstrap_mean_interval():
    iv = bootstrap_mean([1, 0, 1, 1, None, 0])
    assert iv.mean == pytest.approx(0.6) and iv.n == 5
    assert 0 <= iv.lo <= iv.mean <= iv.hi <= 1
    assert bootstrap_mean([1, 0, 1, 1, 0], seed=3) == bootstrap_mean([1, 0, 1, 1, 0], seed=3)
    assert bootstrap_mean([0.5] * 10).to_dict() == {"mean": 0.5, "lo": 0.5, "hi": 0.5, "n": 10}
    assert bootstrap_mean([None, None]).to_dict() == {"mean": None, "lo": None, "hi": None, "n": 0}
    # 400 coin flips: the 95% half-width is about 1.96 * 0.5 / 20 ≈ 0.049
    flips = [i % 2 for i in range(400)]
    iv = bootstrap_mean(flips, resamples=2000)
    assert iv.mean == 0.5 and 0.035 < (iv.hi - iv.lo) / 2 < 0.065


def test_paired_bootstrap_resamples_questions_together():
    rng = random.Random(1)
    difficulty = {f"q{i}": rng.random() for i in range(60)}
    b = dict(difficulty)
    a = {k: v + 0.05 for k, v in difficulty.items()}
    d = paired_bootstrap(a, b, names=("rag", "base"), metric="f1")
    assert (d.a, d.b, d.metric, d.n) == ("rag", "base", "f1", 60)
    assert d.diff == pytest.approx(0.05) and d.lo == pytest.approx(0.05)
    assert d.hi == pytest.approx(0.05) and d.p == 0.0
    # unpaired intervals of the same data overlap: only pairing shows the difference
    assert bootstrap_mean(a.values()).lo < bootstrap_mean(b.values()).hi
    same = paired_bootstrap(b, b)
    assert same.diff == 0 and same.p == 1.0
    partial = paired_bootstrap({"x": 1, "y": None, "z": 1}, {"x": 0, "y": 1, "w": 0})
    assert partial.n == 1 and partial.diff == 1.0
    assert paired_bootstrap({}, {}).diff is None
