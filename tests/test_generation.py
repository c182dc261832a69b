"""One pass over each prompt serves the answer and the reference likelihood: generation that
goes on from the prompt's prefix cache writes what plain ``model.generate`` writes, and the
texts scored on that cache get the numbers a separate scoring pass gives, also on a model with
sliding-window attention whose prompts are longer than the window."""

from __future__ import annotations

import pytest

from core.config import GenerationConfig, ModelConfig
from core.generation import generate
from core.likelihood import reference_logprobs
from core.prompts import PromptTemplate

TEMPLATE = PromptTemplate.load()
QUESTIONS = ["Onde nasce o rio Amazonas?", "Qual é a capital de Portugal e onde fica?",
             "Quem", "Fale sobre a história da cidade de Recife e do seu porto no século XVIII."]
TEXTS = [["Nos Andes.", "Em Lisboa.", "1822"], ["Lisboa, na foz do Tejo."], [],
         ["A cidade foi fundada por bandeirantes.", "O"]]


@pytest.fixture(scope="module")
def llama(one_torch_thread):
    from core.models import load_base

    loaded = load_base(ModelConfig(base="tiny-random-llama", quantize="none", dtype="float32"))
    return loaded.model, loaded.tokenizer


@pytest.fixture(scope="module")
def sliding(llama):
    """A 2-layer Gemma 3 (one sliding-window layer of 8 tokens, one global) on the tiny
    tokenizer: its prompts are far longer than the window."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    _, tok = llama
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, attn_implementation="eager")
    model = Gemma3ForCausalLM(config).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    return model, tok


def _plain(model, tok, prompts, max_new_tokens):
    """What ``model.generate`` writes for each prompt alone (no padding, no prefix cache)."""
    import torch

    out = []
    for p in prompts:
        enc = tok([p], return_tensors="pt")
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        row = ids[0, enc["input_ids"].shape[1]:].tolist()
        eos = row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
        out.append(row[:eos])
    return out


@pytest.mark.parametrize("which", ["llama", "sliding"])
def test_answers_and_scores_from_one_prompt_pass_equal_separate_ones(which, request):
    model, tok = request.getfixturevalue(which)
    prompts = [TEMPLATE.render(q) for q in QUESTIONS]
    if which == "sliding":
        assert min(len(tok(p)["input_ids"]) for p in prompts) > 8 * 3  # far past the window
    want_ids = _plain(model, tok, prompts, 10)
    flat = [(i, t) for i, texts in enumerate(TEXTS) for t in texts]
    want_scores = reference_logprobs(model, tok, [prompts[i] for i, _ in flat],
                                     [t for _, t in flat], batch_size=1, reuse_prompt=False)
    for size in (1, 3, 4):
        decoding = GenerationConfig(max_new_tokens=10, batch_size=size)
        plain = generate(model, tok, prompts, decoding, stop_strings=())
        scored = generate(model, tok, prompts, decoding, stop_strings=(), score=TEXTS)
        assert [g.token_ids for g in plain] == want_ids, size
        assert [g.token_ids for g in scored] == want_ids, size
        assert all(g.scores is None for g in plain)
        got = [scored[i].scores[k] for i, texts in enumerate(TEXTS) for k in range(len(texts))]
        assert got == pytest.approx(want_scores, abs=1e-4), size
        assert scored[2].scores is None  # nothing asked for that prompt
        assert sum(g.scoring_s for g in scored) > 0
        assert all(w < 0 for w in want_scores)


def test_texts_to_score_must_match_the_prompts(llama):
    model, tok = llama
    with pytest.raises(ValueError, match="lists of texts to score"):
        generate(model, tok, [TEMPLATE.render("Quem")], GenerationConfig(), score=[["a"], ["b"]])


@pytest.mark.parametrize("which", ["llama", "sliding"])
def test_rows_that_end_early_make_room_and_every_answer_stays_the_same(which, request,
                                                                       monkeypatch):
    """Rows end at different steps (a frequent token made an end-of-sequence token), waiting
    prompts join the running batch, and every answer is still token for token what
    ``model.generate`` writes for its prompt alone."""
    from collections import Counter

    import core.continuous as continuous

    model, tok = request.getfixturevalue(which)
    prompts = [TEMPLATE.render(q) for q in QUESTIONS + [
        "Quando foi inaugurada a ponte?", "O que é um município e quem o governa?"]]
    free = _plain(model, tok, prompts, 12)
    # an early "EOS": the generated token whose first appearances are at the most different
    # steps (never the first token of an answer)
    def spread(t):
        return len({ids.index(t) if t in ids else len(ids) for ids in free})

    candidates = [t for t in Counter(t for ids in free for t in ids[1:])
                  if all(ids[0] != t for ids in free)]
    end = max(candidates, key=lambda t: (spread(t), -t))
    monkeypatch.setattr(model.generation_config, "eos_token_id", [tok.eos_token_id, end])
    want = []
    for ids in _plain(model, tok, prompts, 12):
        want.append(ids[:ids.index(end)] if end in ids else ids)
    assert len({len(w) for w in want}) > 1  # the rows end at different steps
    joins = []
    real_join = continuous._join

    def spy(cache, mask, other, other_mask):
        joins.append(cache is not None)
        return real_join(cache, mask, other, other_mask)

    monkeypatch.setattr(continuous, "_join", spy)
    passes = []
    import core.likelihood as likelihood

    real_prefix = likelihood.prefix_cache

    def counted(model, input_ids, attention_mask):
        passes.append(tuple(input_ids.shape))
        return real_prefix(model, input_ids, attention_mask)

    monkeypatch.setattr(likelihood, "prefix_cache", counted)
    longest = max(len(tok(p)["input_ids"]) for p in prompts)
    # prefill_tokens 0: all joining prompts in one pass; 1: one prompt a pass; two prompts' worth
    for size, budget in ((2, 0), (3, 0), (4, 0), (4, 1), (4, 2 * longest)):
        passes.clear()
        gens = generate(model, tok, prompts, GenerationConfig(
            max_new_tokens=12, batch_size=size, prefill_tokens=budget), stop_strings=())
        assert [g.token_ids for g in gens] == want, (size, budget)
        assert all(g.stopped_on_eos == (len(g.token_ids) < 12) for g in gens)
        assert sum(rows for rows, _ in passes) == len(prompts)
        if budget:  # within the budget, or one prompt alone
            assert all(rows * width <= budget or rows == 1 for rows, width in passes)
        else:
            assert max(rows for rows, _ in passes) == size
    assert any(joins)  # prompts joined a batch that was running


def test_prefill_groups_keep_rows_times_width_within_the_budget():
    from core.continuous import prefill_groups

    assert prefill_groups([5, 6, 7, 20], 0) == [[0, 1, 2, 3]]
    assert prefill_groups([5, 6, 7, 20], 18) == [[0, 1], [2], [3]]  # 2 x 7 = 14, 3 x 7 = 21
    assert prefill_groups([5, 6, 7, 20], 21) == [[0, 1, 2], [3]]
    assert prefill_groups([30, 2], 10) == [[0], [1]]  # a prompt over the budget goes alone
    assert prefill_groups([], 10) == []


def test_scores_are_the_same_whatever_the_prefill_groups(llama):
    model, tok = llama
    prompts = [TEMPLATE.render(q) for q in QUESTIONS]
    one = generate(model, tok, prompts, GenerationConfig(max_new_tokens=6, batch_size=3,
                                                         prefill_tokens=0), score=TEXTS)
    apart = generate(model, tok, prompts, GenerationConfig(max_new_tokens=6, batch_size=3,
                                                           prefill_tokens=1), score=TEXTS)
    assert [g.token_ids for g in one] == [g.token_ids for g in apart]
    for a, b in zip(one, apart, strict=True):
        assert (a.scores is None) == (b.scores is None)
        if a.scores is not None:
            assert a.scores == pytest.approx(b.scores, abs=1e-4)


def test_a_cache_whose_rows_cannot_join_falls_back_to_model_generate(llama, monkeypatch):
    """Found at the first prefill: nothing is generated twice, the answers are the same."""
    import core.continuous as continuous

    model, tok = llama
    prompts = [TEMPLATE.render(q) for q in QUESTIONS]
    want = [g.token_ids for g in generate(model, tok, prompts, GenerationConfig(max_new_tokens=6))]
    shared = generate(model, tok, prompts, GenerationConfig(max_new_tokens=6, batch_size=3),
                      score=TEXTS)  # scored on the answers' own prompt pass
    calls = []
    monkeypatch.setattr(continuous, "joinable", lambda cache: calls.append(1) and False)
    got = generate(model, tok, prompts, GenerationConfig(max_new_tokens=6), stop_strings=())
    assert calls and [g.token_ids for g in got] == want
    # the model.generate path scores the texts in a pass of its own: the same numbers
    own = generate(model, tok, prompts, GenerationConfig(max_new_tokens=6, batch_size=3),
                   score=TEXTS)
    for a, b in zip(shared, own, strict=True):
        assert (a.scores is None) == (b.scores is None)
        if a.scores is not None:
            assert a.scores == pytest.approx(b.scores, abs=1e-4)


def test_a_prompt_of_one_token_is_generated_through_model_generate(llama):
    model, tok = llama
    (gen,) = generate(model, tok, [""], GenerationConfig(max_new_tokens=4))
    assert len(tok("")["input_ids"]) == 1 and 0 < gen.tokens_out <= 4
