"""Reference likelihood and judge-free multiple choice: hand-computed log-probabilities, padding
that changes nothing, distractors that are deterministic and never the answer, and the arm's
adapter state and lock."""

from __future__ import annotations

import math
import random
import threading

import pytest

from compara.comparison import score_arm
from core.likelihood import (
    KnowledgeScore,
    best_reference,
    cache_key,
    chance_level,
    choose_distractors,
    encode_pair,
    multiple_choice,
    reference_logprobs,
    score_question,
)
from core.questions import Question

# -- a model whose logits are fixed -------------------------------------------------------------

# Vocabulary: 0 = BOS, 1 = pad, 2 = EOS, 3.. = the letters a, b, c, d.
LETTERS = "abcd"
# P(next | previous) for previous = a, b, c, d (rows) over the tokens 0..6 (columns).
NEXT = {
    0: [0, 0, 0, 0.50, 0.25, 0.125, 0.125],  # after BOS
    3: [0, 0, 0.1, 0.1, 0.4, 0.2, 0.2],       # after a
    4: [0, 0, 0.2, 0.3, 0.1, 0.2, 0.2],       # after b
    5: [0, 0, 0.05, 0.05, 0.1, 0.4, 0.4],     # after c
    6: [0, 0, 0.25, 0.25, 0.25, 0.125, 0.125],  # after d
}


class LetterTokenizer:
    """One token per letter; BOS in front when special tokens are added."""

    bos_token_id, pad_token_id, eos_token_id = 0, 1, 2

    def __call__(self, text, add_special_tokens=True):
        ids = [3 + LETTERS.index(ch) for ch in text if ch in LETTERS]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}


def bigram_model(with_keep: bool):
    """A module whose logits at each position are the log-probabilities of NEXT[current token]
    (rows of pads and EOS: uniform). Records the keyword arguments of every call."""
    import torch

    table = torch.full((7, 7), math.log(1 / 7))
    for prev, probs in NEXT.items():
        table[prev] = torch.log(torch.tensor(probs).clamp_min(1e-30))

    class Out:
        def __init__(self, logits):
            self.logits = logits

    class Bigram(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(table.clone(), requires_grad=False)
            self.calls = []

        def _run(self, input_ids, attention_mask=None, position_ids=None, **kw):
            self.calls.append({"input_ids": input_ids.tolist(),
                               "attention_mask": attention_mask.tolist(),
                               "position_ids": position_ids.tolist(), **kw})
            logits = self.table[input_ids]
            keep = kw.get("logits_to_keep")
            return Out(logits[:, -keep:] if keep else logits)

    class WithKeep(Bigram):
        def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0,
                    use_cache=None):
            return self._run(input_ids, attention_mask, position_ids,
                             logits_to_keep=logits_to_keep, use_cache=use_cache)

    class Plain(Bigram):
        def forward(self, input_ids, attention_mask=None, position_ids=None):
            return self._run(input_ids, attention_mask, position_ids)

    return WithKeep() if with_keep else Plain()


def expected(prompt: str, continuation: str) -> float:
    """By hand: the mean of log P(token | previous token) over the continuation's letters."""
    prev = 3 + LETTERS.index(prompt[-1]) if prompt else 0
    total = 0.0
    for ch in continuation:
        tok = 3 + LETTERS.index(ch)
        total += math.log(NEXT[prev][tok])
        prev = tok
    return total / len(continuation)


@pytest.mark.parametrize("with_keep", [True, False])
def test_fixed_logits_give_the_hand_computed_mean_log_probability(with_keep):
    model = bigram_model(with_keep)
    tok = LetterTokenizer()
    # after "ab", "c": log P(c | b) = log 0.2; after "a", "cd": log P(c | a), log P(d | c)
    assert expected("ab", "c") == pytest.approx(math.log(0.2))
    assert expected("a", "cd") == pytest.approx((math.log(0.2) + math.log(0.4)) / 2)
    prompts = ["ab", "a", "dddd", "", "c"]
    conts = ["c", "cd", "abca", "ab", "  dd "]
    got = reference_logprobs(model, tok, prompts, conts, batch_size=8)
    want = [math.log(0.2), (math.log(0.2) + math.log(0.4)) / 2,
            (math.log(0.25) + math.log(0.4) + math.log(0.2) + math.log(0.05)) / 4,
            (math.log(0.5) + math.log(0.4)) / 2,  # after BOS alone
            (math.log(0.4) + math.log(0.125)) / 2]  # stripped: "dd" after "c" = c→d, d→d
    assert want == pytest.approx([expected(p, c.strip()) for p, c in zip(prompts, conts, strict=True)])
    assert got == pytest.approx(want, abs=1e-5)
    # one forward pass for the whole batch, left padded, positions counted from the first token
    (call,) = model.calls
    width = len(call["input_ids"][0])
    for ids, mask, pos in zip(call["input_ids"], call["attention_mask"], call["position_ids"],
                              strict=True):
        n = sum(mask)
        assert mask == [0] * (width - n) + [1] * n
        assert ids[: width - n] == [1] * (width - n)  # pad id
        assert pos[width - n:] == list(range(n))
    if with_keep:
        assert call["logits_to_keep"] == 5 and call["use_cache"] is False  # longest + 1


def test_batch_size_and_order_change_no_number():
    tok = LetterTokenizer()
    prompts = ["ab", "a", "dddd", "", "c", "abcdabcd"]
    conts = ["c", "cd", "abca", "ab", "dd", "b"]
    one = reference_logprobs(bigram_model(True), tok, prompts, conts, batch_size=1)
    for size in (2, 3, 16):
        assert reference_logprobs(bigram_model(True), tok, prompts, conts, size) == \
            pytest.approx(one, abs=1e-6)


def test_empty_continuation_is_none_and_bad_input_is_named():
    tok = LetterTokenizer()
    assert reference_logprobs(bigram_model(True), tok, ["a", "a"], ["", "b"])[0] is None
    with pytest.raises(ValueError, match="2 prompts but 1"):
        reference_logprobs(bigram_model(True), tok, ["a", "b"], ["c"])

    class NoBos(LetterTokenizer):
        def __call__(self, text, add_special_tokens=True):
            return super().__call__(text, add_special_tokens=False)

    with pytest.raises(ValueError, match="prompt 1 has no token"):
        reference_logprobs(bigram_model(True), NoBos(), ["a", ""], ["b", "c"])


# -- choosing and ranking ---------------------------------------------------------------------

def test_best_reference_and_multiple_choice_count_ties_as_wrong():
    assert best_reference([-2.0, None, -1.5, -1.5]) == (-1.5, 2)
    assert best_reference([None]) == (None, None)
    right = multiple_choice(-1.0, [-2.0, -3.0, None])
    assert right.correct and right.rank == 1 and right.choices == 3
    assert right.chance == pytest.approx(1 / 3)
    tie = multiple_choice(-1.0, [-1.0, -3.0])
    assert not tie.correct and tie.rank == 2
    assert multiple_choice(-1.0, [-0.5, -0.2, -3.0]).rank == 3
    assert multiple_choice(None, [-1.0]) is None and multiple_choice(-1.0, [None]) is None


def test_score_question_takes_the_best_reference_against_the_distractors():
    s = score_question("q1", "rag", ["1822", "em 1822"], ["1500", "1889"],
                       [-3.0, -1.0, -2.0, -0.5])
    assert s.reference_logprob == -1.0 and s.best_reference == "em 1822"
    assert s.choice_correct == 0.0 and s.choice_rank == 2 and s.choices == 3
    assert s.to_record()["mc_distractors"] == ["1500", "1889"]
    plain = score_question("q2", "base", ["x"], [], [-1.0])
    assert plain.choice_correct is None and plain.choices is None
    assert chance_level([s, plain, KnowledgeScore("q3", "base", choices=5)]) == pytest.approx(
        (1 / 3 + 1 / 5) / 2)


def _questions() -> list[Question]:
    data = [
        ("q1", ["7 de setembro de 1822"], "lead"), ("q2", ["1822"], "lead"),
        ("q3", ["Pedro Álvares Cabral"], "lead"), ("q4", ["o rio Tejo"], "lead"),
        ("q5", ["Recife", "cidade do Recife"], "lead"), ("q6", ["Lisboa"], "lead"),
        ("q7", ["Rio Tejo"], "infobox"), ("q8", ["Brasília"], "infobox"),
        ("q9", ["300 km"], "infobox"), ("q10", [], "unanswerable"),
        ("q11", ["LISBOA."], "table"), ("q12", ["café"], "table"),
    ]
    return [Question(id=i, question=f"Pergunta {i}?", reference=r, type=t) for i, r, t in data]


def test_distractors_are_deterministic_whatever_the_order_and_never_the_answer():
    from core.metrics import contains

    qs = _questions()
    first = choose_distractors(qs, k=3, seed=7)
    shuffled = list(qs)
    random.Random(1).shuffle(shuffled)
    assert choose_distractors(shuffled, k=3, seed=7) == first
    assert "q10" not in first  # no reference, nothing to rank
    by_id = {q.id: q for q in qs}
    for qid, chosen in first.items():
        refs = by_id[qid].reference
        assert len(chosen) == 3 and len(set(chosen)) == 3
        for d in chosen:
            assert d not in refs
            assert not contains(d, refs) and not any(contains(r, d) for r in refs), (qid, d)
    # "1822" is inside "7 de setembro de 1822"; "Rio Tejo" is "o rio Tejo"; "LISBOA." is Lisboa
    assert "1822" not in first["q1"] and "7 de setembro de 1822" not in first["q2"]
    assert "Rio Tejo" not in first["q4"] and "LISBOA." not in first["q6"]
    # same type first: a lead question draws lead references while there are enough
    lead_refs = {r for q in qs if q.type == "lead" for r in q.reference}
    assert set(first["q3"]) <= lead_refs
    # too few of its type: the table questions fill up from other types
    assert any(d not in {"café", "LISBOA."} for d in first["q12"])
    # another seed draws differently somewhere; k is respected; k = 0 gives none
    assert choose_distractors(qs, k=3, seed=8) != first
    assert all(len(v) == 1 for v in choose_distractors(qs, k=1, seed=7).values())
    assert all(v == [] for v in choose_distractors(qs, k=0).values())


def test_adding_a_question_moves_no_other_choice_but_its_own_rank():
    qs = _questions()
    before = choose_distractors(qs, k=2, seed=3)
    after = choose_distractors([*qs, Question(id="q99", question="?", reference=["Goiás"],
                                              type="infobox")], k=2, seed=3)
    changed = [qid for qid in before if before[qid] != after[qid]]
    assert all("Goiás" in after[qid] for qid in changed)


# -- the real tokenizer and a real (tiny) model -----------------------------------------------

@pytest.fixture(scope="module")
def loaded(one_torch_thread):
    from core.config import ModelConfig
    from core.models import load_base

    return load_base(ModelConfig(base="tiny-random-llama", quantize="none", dtype="float32"))


def test_continuations_are_tokenised_as_training_tokenises_a_response(loaded):
    from core.prompts import PromptTemplate
    from finetune.data import encode

    template = PromptTemplate.load()
    record = {"instruction": "Qual é a capital de Portugal?", "output": " Lisboa, na foz do Tejo. "}
    ex = encode(loaded.tokenizer, template, record, max_length=2048)
    p, r = encode_pair(loaded.tokenizer, template.render(record["instruction"]), record["output"])
    assert ex.input_ids == p + r + [loaded.tokenizer.eos_token_id]  # EOS is not scored
    assert [t for t in ex.labels if t != -100] == r + [loaded.tokenizer.eos_token_id]


def _plain_forward(model, tok, prompt: str, continuation: str) -> float:
    """An independent computation: the unpadded sequence's logits, no cache, no batch."""
    import torch

    p, r = encode_pair(tok, prompt, continuation)
    with torch.no_grad():
        logits = model(torch.tensor([p + r])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return sum(float(logp[len(p) - 1 + i, t]) for i, t in enumerate(r)) / len(r)


def test_rows_are_grouped_into_passes_of_similar_lengths():
    from core.likelihood import PASS_COST_TOKENS, _passes

    lengths = [0, 5, 1, 0, 200, 3, 199, 2, 1, 4]
    passes = _passes(lengths, most=4)
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))
    assert all(len(p) <= 4 for p in passes)
    for p in passes:  # no pass pads more than a pass costs
        longest = max(lengths[i] for i in p)
        assert sum(longest - lengths[i] for i in p) <= PASS_COST_TOKENS
    assert {4, 6} in [set(p) for p in passes]  # the two long ones together, apart from the rest


@pytest.mark.parametrize("reuse_prompt", [True, False])
def test_tiny_llama_any_batching_equals_a_plain_forward(loaded, reuse_prompt, monkeypatch):
    model, tok = loaded.model, loaded.tokenizer
    q1, q2 = "Qual é a capital de Portugal?", "Fale sobre a história da cidade de Recife."
    # repeated prompts (a question's references and distractors), 1- to many-token texts
    prompts = [q1, q1, q1, "Onde nasce o rio Amazonas? Responda.", q2, q2, "Quem", q1]
    conts = ["Lisboa", "A capital é Lisboa, na foz do Tejo.", "1822", "Nos Andes, no Peru.",
             "Ela nasceu em Recife e estudou ciências.", "a", "O", "Porto"]
    want = [_plain_forward(model, tok, p, c) for p, c in zip(prompts, conts, strict=True)]
    for size in (1, 2, 5, 16):
        got = reference_logprobs(model, tok, prompts, conts, batch_size=size,
                                 reuse_prompt=reuse_prompt)
        assert got == pytest.approx(want, abs=1e-5), size
    monkeypatch.setattr("core.likelihood.PASS_COST_TOKENS", 0)  # a pass per length
    got = reference_logprobs(model, tok, prompts, conts, batch_size=16, reuse_prompt=reuse_prompt)
    assert got == pytest.approx(want, abs=1e-5)
    assert all(w < 0 for w in want)


def test_tiny_llama_with_a_hand_set_output_bias_gives_the_hand_computed_value(one_torch_thread):
    """lm_head replaced by weights 0 and a fixed bias: every position predicts softmax(bias),
    so a continuation's mean log-probability is the mean of log softmax(bias)[its tokens]."""
    import torch

    from core.config import ModelConfig
    from core.models import load_base

    fresh = load_base(ModelConfig(base="tiny-random-llama", quantize="none", dtype="float32"))
    model, tok = fresh.model, fresh.tokenizer
    vocab = model.config.vocab_size
    head = torch.nn.Linear(model.config.hidden_size, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.linspace(-3.0, 2.0, vocab))
    model.lm_head = head
    log_z = math.log(sum(math.exp(-3.0 + 5.0 * i / (vocab - 1)) for i in range(vocab)))
    prompts = ["Qual é a capital de Portugal?", "Qual é a capital de Portugal?", "Quem"]
    conts = ["Lisboa", "1822", "Ela nasceu em Recife."]
    for reuse in (True, False):
        got = reference_logprobs(model, tok, prompts, conts, batch_size=2, reuse_prompt=reuse)
        for c, value in zip(conts, got, strict=True):
            ids = tok(c, add_special_tokens=False)["input_ids"]
            hand = sum(-3.0 + 5.0 * t / (vocab - 1) - log_z for t in ids) / len(ids)
            assert value == pytest.approx(hand, abs=1e-5)


def test_score_arm_uses_the_arms_prompt_adapter_state_and_lock(loaded, monkeypatch):
    import torch
    from peft import LoraConfig, get_peft_model

    import core.likelihood as likelihood
    from compara.comparison import Comparison
    from core.config import GenerationConfig, ModelConfig
    from core.models import load_base
    from core.models.loading import AdapterInfo, Loaded
    from core.prompts import PromptTemplate

    template = PromptTemplate.load()
    fresh = load_base(ModelConfig(base="tiny-random-llama", quantize="none", dtype="float32"))
    torch.manual_seed(0)  # LoRA weights drawn at random (not zero): the adapter changes outputs
    peft = get_peft_model(fresh.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    peft.eval()
    tuned = Loaded(model=peft, tokenizer=fresh.tokenizer, info=fresh.info,
                   adapter=AdapterInfo(path="-", template=template, summary={}))
    comparison = Comparison(tuned, GenerationConfig(max_new_tokens=4, batch_size=3), template)
    qs = _questions()[:4] + [Question(id="open", question="E então?")]
    distractors = choose_distractors(qs, k=2, seed=0)

    held = []
    real = likelihood.reference_logprobs

    def spy(model, tokenizer, prompts, continuations, batch_size):
        other = threading.Thread(target=lambda: held.append(not comparison.lock.acquire(timeout=0)))
        other.start()
        other.join()
        return real(model, tokenizer, prompts, continuations, batch_size)

    monkeypatch.setattr(likelihood, "reference_logprobs", spy)
    base_scores = score_arm(comparison, "base", qs, distractors)
    tuned_scores = score_arm(comparison, "finetuned", qs, distractors)
    assert held == [True, True]  # another thread could not take the lock meanwhile
    monkeypatch.setattr(likelihood, "reference_logprobs", real)

    assert base_scores[-1] == KnowledgeScore("open", "base")  # no reference: empty score
    for arm, scores in (("base", base_scores), ("finetuned", tuned_scores)):
        for q, s in zip(qs[:4], scores, strict=False):
            prompt = comparison.prepare(arm, q.question).prompt
            texts = [*q.reference, *distractors[q.id]]
            if arm == "base":
                with tuned.adapter_disabled():
                    want = real(peft, fresh.tokenizer, [prompt] * len(texts), texts, 1)
            else:
                want = real(peft, fresh.tokenizer, [prompt] * len(texts), texts, 1)
            assert s.reference_logprob == pytest.approx(max(want[:len(q.reference)]), abs=1e-5)
            assert s.choices == 3 and s.distractors == distractors[q.id]
    # the adapter changes the numbers: the arms really ran in different states
    assert [s.reference_logprob for s in base_scores[:4]] != pytest.approx(
        [s.reference_logprob for s in tuned_scores[:4]], abs=1e-4)
    # prompts given (from results records) are used as they are
    given = score_arm(comparison, "base", qs[:1], prompts=["Outra coisa:"])
    with tuned.adapter_disabled():
        p = real(peft, fresh.tokenizer, ["Outra coisa:"], qs[0].reference, 1)
    assert given[0].reference_logprob == pytest.approx(p[0], abs=1e-5)
    # cache keys: the decoding settings do not matter, the prompt and the texts do
    k = cache_key(comparison, "base", "P", ["a"])
    assert k == cache_key(comparison.with_settings(GenerationConfig(max_new_tokens=9)), "base",
                          "P", ["a"])
    assert k != cache_key(comparison, "base", "P", ["b"])
    assert k != cache_key(comparison, "base", "Q", ["a"])
