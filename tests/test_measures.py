"""Measures with no judge: similarity on known vectors, language on known sentences,
faithfulness on hand-made answers and passages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.measures import (
    content_words,
    faithfulness,
    is_portuguese,
    portuguese_score,
    query_side,
    semantic_similarity,
)

# -- meaning ----------------------------------------------------------------------------------

VECTORS = {
    "Lisboa": [1.0, 0.0, 0.0],
    "A capital é Lisboa.": [3.0, 4.0, 0.0],  # cosine with "Lisboa": 3/5
    "Porto": [0.0, 0.0, 2.0],                 # orthogonal to both
    "o oposto": [-1.0, 0.0, 0.0],
}


def fake_embed(texts):
    fake_embed.calls.append(list(texts))
    return np.array([VECTORS[t] for t in texts])


fake_embed.calls = []


def test_similarity_is_the_cosine_to_the_closest_reference():
    assert semantic_similarity("A capital é Lisboa.", "Lisboa", fake_embed) == pytest.approx(0.6)
    assert semantic_similarity("Lisboa", ["Porto", "A capital é Lisboa."], fake_embed) == \
        pytest.approx(0.6)
    assert semantic_similarity("Porto", ["Lisboa"], fake_embed) == pytest.approx(0.0)
    assert semantic_similarity("o oposto", "Lisboa", fake_embed) == pytest.approx(-1.0)
    assert semantic_similarity(" Lisboa ", ["Lisboa", ""], fake_embed) == pytest.approx(1.0)
    assert fake_embed.calls[-1] == ["Lisboa", "Lisboa"]  # one call, empty reference left out
    assert semantic_similarity("", "Lisboa", fake_embed) is None
    assert semantic_similarity("Lisboa", [], fake_embed) is None
    with pytest.raises(ValueError, match="2 vectors for 3 texts"):
        semantic_similarity("Lisboa", ["Porto", "Lisboa"], lambda texts: np.eye(3)[:2])


def test_query_side_embeds_every_text_as_a_query():
    class Stub:
        def __init__(self):
            self.queries = []

        def embed_query_vector(self, text):
            self.queries.append(text)
            return np.array(VECTORS[text], dtype=np.float32)

        def embed_passages(self, texts):  # must not be used: similarity is symmetric
            raise AssertionError("passage side used")

    stub = Stub()
    assert semantic_similarity("A capital é Lisboa.", "Lisboa", query_side(stub)) == \
        pytest.approx(0.6)
    assert stub.queries == ["A capital é Lisboa.", "Lisboa"]


# -- language ---------------------------------------------------------------------------------

PORTUGUESE = [
    "Foi fundada em 1565 por Estácio de Sá.",
    "A cidade fica na margem esquerda do rio Tejo.",
    "O município tem vinte mil habitantes segundo o censo.",
    "Os trechos não contêm a resposta.",
    "Ela nasceu em Recife e estudou ciências naturais.",
]
ENGLISH = [
    "The city lies on the left bank of the river.",
    "She was born in Recife and studied natural sciences.",
    "It was founded in 1565 by a Portuguese captain.",
]
SPANISH = [
    "La ciudad está en la orilla izquierda del río.",
    "Ella nació en Recife y estudió ciencias naturales.",
    "El municipio tiene veinte mil habitantes según el censo.",
]


@pytest.mark.parametrize("text", PORTUGUESE)
def test_portuguese_sentences_are_portuguese(text):
    assert is_portuguese(text) is True
    assert portuguese_score(text) > 0.8


@pytest.mark.parametrize("text", ENGLISH + SPANISH)
def test_english_and_spanish_sentences_are_not(text):
    assert is_portuguese(text) is False
    assert portuguese_score(text) < 0.2


@pytest.mark.parametrize("text", ["1822", "Lisboa", "Estácio de", "em 1565", "", "  ", "12 345 678"])
def test_short_answers_are_unknown_not_foreign(text):
    assert portuguese_score(text) is None
    assert is_portuguese(text) is None


# -- faithfulness -----------------------------------------------------------------------------

PASSAGES = [
    {"title": "Rio Verde-Claro", "section": "Curso",
     "text": "O rio Verde-Claro nasce na Serra do Lajeado e deságua no rio Tocantins, "
             "depois de percorrer 310 quilômetros."},
    {"title": "Vila Serena", "section": "", "text": "Os habitantes de Vila Serena são serenenses."},
]


def test_content_words_drop_stop_words_and_merge_plural_and_gender():
    assert content_words("O rio nasce na Serra do Lajeado.") == {"rio", "nasc", "serr", "lajead"}
    assert content_words("Os botânicos e a botânica") == content_words("botânico")
    assert content_words("é de que não foi") == set()


@pytest.mark.parametrize(("answer", "share"), [
    ("Nasce na Serra do Lajeado.", 1.0),                          # nasce, serra, lajeado
    ("O rio nasce na Serra da Mantiqueira.", 3 / 4),               # mantiqueira is not there
    ("Deságua no oceano Atlântico.", 1 / 3),                       # only "deságua"
    ("Percorre 310 quilômetros até o Tocantins.", 3 / 4),         # "percorre" ≠ "percorrer"
    ("Os habitantes são chamados serenenses.", 2 / 3),             # "chamados" is not there
    ("Serra serra serra serra Mantiqueira", 1 / 2),                # distinct words count once
    ("VERDE-CLARO", 1.0),                                          # the title counts
])
def test_faithfulness_is_the_share_of_content_words_in_the_passages(answer, share):
    assert faithfulness(answer, PASSAGES) == pytest.approx(share)


def test_faithfulness_is_none_where_nothing_is_asserted():
    assert faithfulness("Os trechos não contêm a resposta.", PASSAGES) is None  # abstention
    assert faithfulness("Não sei.", PASSAGES) is None
    assert faithfulness("É o que foi.", PASSAGES) is None  # no content word
    assert faithfulness("", PASSAGES) is None
    assert faithfulness("Nasce na Serra do Lajeado.", []) is None  # no passages given
    assert faithfulness("Fora do texto: sem resposta.", PASSAGES,
                        abstain_phrases=["sem resposta"]) is None
    assert not math.isnan(faithfulness("Tocantins", PASSAGES))
