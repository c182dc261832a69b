"""What an arm knows, read from the model's probabilities instead of its generated text.

Generation hides knowledge: a small model that gives the right answer a high probability may
still write something else, or loop. Knowledge-probing work scores the answer directly:

- **reference likelihood**: the mean log-probability per token of a reference answer given
  the arm's exact prompt (its passages for the retrieval arms, the adapter on for the
  fine-tuned arms), the best over the question's references (:func:`reference_logprobs`);
- **multiple choice without a judge**: the reference ranked against K distractors, the
  references of other questions of the same type (:func:`choose_distractors`); the arm is
  right when the reference scores highest, a tie counts as wrong (:func:`multiple_choice`).

A continuation is tokenised the way training tokenises a response after its prompt
(``finetune.data.encode``): prompt and continuation separately, the prompt with the
tokenizer's special tokens (BOS) and without a closing EOS, the continuation stripped and
without special tokens. Only the continuation's tokens are scored, and **EOS is not**: a
reference is scored as the start of an answer, so a model that would go on writing after it
is not penalised, and references of different lengths are compared per token.

No generation: forward passes only, left padded with an attention mask and position ids
counted from each row's first real token, so batching changes no number. A question's prompt
is long and its continuations (references and distractors) short, so each distinct prompt is
run ONCE and its key/value cache serves all its continuations (one more pass over just their
tokens); a model without a cache gets one pass over prompt + continuation per row. Only the
logits that score a token are kept (``logits_to_keep`` where the model takes it), so a
262k-token vocabulary costs megabytes, not gigabytes.

:func:`compara.comparison.score_arm` does this for one arm of a comparison: the
prompts come from ``comparison.prompt`` (byte for byte those the answers are generated from),
and the forward passes run in the arm's adapter state and under the comparison's lock, the way
its answers are generated.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.questions import Question

# Bumped when a definition here changes, so cached scores are not reused across it.
LIKELIHOOD_VERSION = 1
DEFAULT_DISTRACTORS = 3


# -- tokens ---------------------------------------------------------------------------------

def encode_pair(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """(prompt ids, continuation ids) exactly as ``finetune.data.encode`` builds a training
    example, less the EOS it appends to the response."""
    p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if p and p[-1] == tokenizer.eos_token_id:  # a tokenizer that closes every text with EOS
        p = p[:-1]
    r = tokenizer(continuation.strip(), add_special_tokens=False)["input_ids"]
    return list(p), list(r)


def accepts(model, name: str) -> bool:
    """Whether the (base) model's forward takes the keyword ``name`` by name."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return name in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def _batch_logprobs(model, rows: list[tuple[list[int], list[int]]], pad_id: int, device) -> list[float]:
    """Mean log-probability of each row's continuation, in one forward pass."""
    import torch

    width = max(len(p) + len(r) for p, r in rows)
    keep = max(len(r) for _, r in rows) + 1  # logits at column c predict the token at c + 1
    ids, mask, pos = [], [], []
    for p, r in rows:
        n = len(p) + len(r)
        ids.append([pad_id] * (width - n) + p + r)
        mask.append([0] * (width - n) + [1] * n)
        pos.append([0] * (width - n) + list(range(n)))
    input_ids = torch.tensor(ids, device=device)
    kwargs: dict[str, Any] = {"attention_mask": torch.tensor(mask, device=device),
                              "position_ids": torch.tensor(pos, device=device)}
    if accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep
    if accepts(model, "use_cache"):
        kwargs["use_cache"] = False
    logits = model(input_ids=input_ids, **kwargs).logits[:, -keep:, :].float()
    logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
    targets = input_ids[:, -(keep - 1):]
    token_lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (rows, keep - 1)
    return [float(token_lp[j, -len(r):].mean()) for j, (_, r) in enumerate(rows)]


def prefix_cache(model, input_ids, attention_mask):
    """The key/value cache of every left-padded row of ``input_ids`` but its last token.

    Both scoring (:func:`score_after_prefix`) and generation (``core.generation``) go on
    from it: each feeds the prompt's last token itself, so one pass over the prompt serves
    the answer and the reference likelihood alike. Position ids count from each row's first
    real token, as ``generate`` counts them.
    """
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    keep = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
    out = model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                position_ids=positions[:, :-1], use_cache=True, **keep)
    return out.past_key_values


def score_after_prefix(model, cache, input_ids, attention_mask,
                       rows: Sequence[tuple[int, Sequence[int]]], pad_id: int,
                       rows_per_pass: int) -> list[float]:
    """Mean log-probability of each row's continuation ``(prompt row, token ids)`` after its
    prompt, on a copy of :func:`prefix_cache`'s ``cache`` (which is left as it was).

    A pass feeds each row its prompt's last token and its continuation but the last token:
    the logits at those positions predict the continuation's tokens. Rows of similar lengths
    share a pass (:func:`_passes`), at most ``rows_per_pass`` of them.
    """
    import torch

    device = input_ids.device
    last = input_ids[:, -1].tolist()
    n_real = attention_mask.long().sum(dim=1).tolist()
    prefix_mask = attention_mask[:, :-1]
    result: list[float] = [0.0] * len(rows)
    for chunk in _passes([len(r) for _, r in rows], rows_per_pass):
        which = torch.tensor([rows[i][0] for i in chunk], device=device)
        conts = [list(rows[i][1]) for i in chunk]
        longest = max(len(c) for c in conts)
        c_ids = torch.tensor([[last[rows[i][0]]] + c[:-1] + [pad_id] * (longest - len(c))
                              for i, c in zip(chunk, conts, strict=True)], device=device)
        c_mask = torch.tensor([[1] * len(c) + [0] * (longest - len(c)) for c in conts],
                              device=device)
        c_pos = torch.tensor([[n_real[rows[i][0]] - 1 + t for t in range(longest)]
                              for i in chunk], device=device)
        targets = torch.tensor([c + [0] * (longest - len(c)) for c in conts], device=device)
        past = _branch(cache)
        past.batch_select_indices(which)
        logits = model(input_ids=c_ids, attention_mask=torch.cat([prefix_mask[which], c_mask], 1),
                       position_ids=c_pos, past_key_values=past, use_cache=True).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        token_lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        token_lp = torch.where(c_mask.bool(), token_lp, torch.zeros_like(token_lp))
        for i, c, total in zip(chunk, conts, token_lp.sum(dim=1).tolist(), strict=True):
            result[i] = total / len(c)
        del past, logits, logp
    return result


def _branch(cache):
    """A cache whose rows can be selected and extended without touching ``cache``: its layers
    are copied, not their tensors (selecting rows and appending both make new tensors; a deep
    copy of the whole batch's cache at every pass did nothing more)."""
    import copy

    past = copy.copy(cache)
    past.layers = [copy.copy(layer) for layer in cache.layers]
    return past


def score_on_prefix(model, tokenizer, cache, enc, texts: Sequence[Sequence[str]],
                    prompts: Sequence[str], rows_per_pass: int) -> list[list[float | None]]:
    """Each prompt's ``texts`` (mean log-probability per token, None for an empty text) on the
    :func:`prefix_cache` of the tokenised batch ``enc`` of ``prompts``."""
    rows, where = [], []
    out: list[list[float | None]] = [[None] * len(t) for t in texts]
    for j, (prompt, wanted) in enumerate(zip(prompts, texts, strict=True)):
        for k, text in enumerate(wanted):
            ids = encode_pair(tokenizer, prompt, text)[1]
            if ids:
                rows.append((j, ids))
                where.append((j, k))
    if rows:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        values = score_after_prefix(model, cache, enc["input_ids"], enc["attention_mask"], rows,
                                    pad, rows_per_pass)
        for (j, k), value in zip(where, values, strict=True):
            out[j][k] = value
    return out


def _prompt_then_continuations(model, prompts: list[list[int]], rows: list[tuple[int, list[int]]],
                               pad_id: int, device, rows_per_pass: int) -> list[float]:
    """Mean log-probability of each row's continuation (row = (prompt index, ids)): the prompts
    in one forward pass whose key/value cache every continuation of that prompt then reuses."""
    import torch

    width = max(len(p) for p in prompts)
    if width < 2:  # one-token prompts: no prefix to keep, a plain pass per row
        return _batch_logprobs(model, [(prompts[j], list(r)) for j, r in rows], pad_id, device)
    p_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    p_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    cache = prefix_cache(model, p_ids, p_mask)
    return score_after_prefix(model, cache, p_ids, p_mask, rows, pad_id, rows_per_pass)


# A forward pass costs about as much as this many padded tokens more (it reads every weight).
PASS_COST_TOKENS = 64


def _passes(lengths: Sequence[int], most: int) -> list[list[int]]:
    """Rows grouped into forward passes: shortest first, at most ``most`` a pass, a new pass
    when padding the next row's pass to it would waste more than a pass costs. (A group of
    rows of length 0 needs no forward pass at all.)"""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    passes: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in order:
        n = lengths[i]
        waste = (len(current) + 1) * n - (total + n)
        if current and (len(current) >= most or waste > PASS_COST_TOKENS):
            passes.append(current)
            current, total = [], 0
        current.append(i)
        total += n
    if current:
        passes.append(current)
    return passes


def reference_logprobs(model, tokenizer, prompts: Sequence[str], continuations: Sequence[str],
                       batch_size: int = 8, reuse_prompt: bool | None = None) -> list[float | None]:
    """The mean log-probability per token of ``continuations[i]`` after ``prompts[i]``.

    Natural log; EOS not included (see the module docstring). None for a continuation with no
    token (an empty text). The result is in the order given.

    ``reuse_prompt`` (default: when the model takes ``past_key_values``): each distinct prompt
    is run once, ``batch_size`` prompts per forward pass, and all its continuations are scored
    on its key/value cache, as many rows per pass as hold the key/values of ``batch_size``
    rows of 1024 tokens (at least ``batch_size``). Otherwise each (prompt, continuation) is one
    row, ``batch_size`` rows of similar lengths per forward pass. Both give the same numbers.
    """
    import torch

    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    pairs = [encode_pair(tokenizer, p, c) for p, c in zip(prompts, continuations, strict=True)]
    for i, (p, r) in enumerate(pairs):
        if r and not p:
            raise ValueError(f"prompt {i} has no token: nothing predicts the continuation's first "
                             "token (give a prompt, or a tokenizer that adds BOS)")
    out: list[float | None] = [None] * len(pairs)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    size = max(1, batch_size)
    if reuse_prompt is None:
        reuse_prompt = accepts(model, "past_key_values")
    with torch.inference_mode():
        if not reuse_prompt:
            todo = sorted((i for i, (_, r) in enumerate(pairs) if r),
                          key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
            for start in range(0, len(todo), size):
                idx = todo[start:start + size]
                values = _batch_logprobs(model, [pairs[i] for i in idx], pad_id, device)
                for i, value in zip(idx, values, strict=True):
                    out[i] = value
            return out
        by_prompt: dict[tuple[int, ...], list[int]] = {}
        for i, (p, r) in enumerate(pairs):
            if r:
                by_prompt.setdefault(tuple(p), []).append(i)
        order = sorted(by_prompt, key=len)
        for start in range(0, len(order), size):
            group = order[start:start + size]
            members = [(j, i) for j, key in enumerate(group) for i in by_prompt[key]]
            width = len(group[-1]) + max(len(pairs[i][1]) for _, i in members)
            per_pass = max(size, size * 1024 // width)
            values = _prompt_then_continuations(
                model, [list(key) for key in group], [(j, pairs[i][1]) for j, i in members],
                pad_id, device, per_pass)
            for (_, i), value in zip(members, values, strict=True):
                out[i] = value
    return out


# -- one question ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    """The reference against its distractors: right only when it scores strictly highest."""

    correct: bool
    rank: int  # 1 = first; a distractor tied with the reference ranks above it
    choices: int  # the reference and the distractors scored

    @property
    def chance(self) -> float:
        return 1.0 / self.choices


def logprobs_per_prompt(model, tokenizer, prompts: Sequence[str],
                        texts: Sequence[Sequence[str]], batch_size: int
                        ) -> list[list[float | None]]:
    """:func:`reference_logprobs` of each prompt's ``texts``, grouped back per prompt."""
    flat = [(i, text) for i, group in enumerate(texts) for text in group]
    values = reference_logprobs(model, tokenizer, [prompts[i] for i, _ in flat],
                                [text for _, text in flat], batch_size=batch_size)
    out: list[list[float | None]] = [[] for _ in prompts]
    for (i, _), value in zip(flat, values, strict=True):
        out[i].append(value)
    return out


def best_reference(scores: Sequence[float | None]) -> tuple[float | None, int | None]:
    """(best score, its index) over a question's references; (None, None) if none scored."""
    scored = [(s, i) for i, s in enumerate(scores) if s is not None and not math.isnan(s)]
    if not scored:
        return None, None
    best = max(scored, key=lambda t: (t[0], -t[1]))
    return best


def multiple_choice(reference: float | None, distractors: Iterable[float | None]) -> Choice | None:
    """The reference's rank among the distractors' scores (ties count against it); None
    without a reference score or without any scored distractor."""
    others = [d for d in distractors if d is not None and not math.isnan(d)]
    if reference is None or not others:
        return None
    rank = 1 + sum(d >= reference for d in others)
    return Choice(correct=rank == 1, rank=rank, choices=len(others) + 1)


def _normal(text: str) -> tuple[str, ...]:
    from core.metrics import tokens

    return tuple(tokens(text))


def _within(needle: tuple[str, ...], hay: tuple[str, ...]) -> bool:
    n = len(needle)
    return 0 < n <= len(hay) and any(hay[i:i + n] == needle for i in range(len(hay) - n + 1))


def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """One normalised text equals or contains the other as whole words."""
    return a == b or _within(a, b) or _within(b, a)


def _hash64(*parts: object) -> int:
    blob = "\x00".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little")


def _mix(x: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread hash of a 64-bit integer."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def choose_distractors(questions: Sequence[Question], k: int = DEFAULT_DISTRACTORS,
                       seed: int = 0) -> dict[str, list[str]]:
    """For each question with a reference, ``k`` wrong answers: references of OTHER questions.

    Those of the same ``type`` first, then of any type if there are too few. A candidate that
    equals or contains one of the question's references, or is contained in one (after
    normalisation: "1822" is not a wrong answer to "7 de setembro de 1822"), is left out, and so
    is a second candidate with the same normalised text; of a candidate question with several
    references, the first usable one is taken. The order is a hash of (seed, question id,
    candidate id): deterministic whatever the order of the file, and adding a question changes
    no other question's choice except where it ranks itself. A question gets fewer than ``k``
    when the file has too few usable references. Cost: O(Q^2) cheap integer hashes for Q
    questions (a second for a few thousand).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    with_refs = [q for q in questions if q.reference]
    normal = {q.id: [_normal(r) for r in q.reference] for q in with_refs}
    id_hash = {q.id: _hash64("id", q.id) for q in with_refs}
    out: dict[str, list[str]] = {}
    for q in with_refs:
        own = [n for n in normal[q.id] if n]
        mine = _hash64("seed", seed, q.id)
        others = sorted((o for o in with_refs if o.id != q.id),
                        key=lambda o: (o.type != q.type, _mix(mine ^ id_hash[o.id]), o.id))
        chosen: list[str] = []
        seen: set[tuple[str, ...]] = set()
        for o in others:
            if len(chosen) >= k:
                break
            for text, norm in zip(o.reference, normal[o.id], strict=True):
                if not norm or norm in seen or any(_overlaps(norm, r) for r in own):
                    continue
                chosen.append(text)
                seen.add(norm)
                break
        out[q.id] = chosen
    return out


# -- one arm of a comparison ----------------------------------------------------------------

@dataclass
class KnowledgeScore:
    """Reference likelihood and multiple choice of one (question, arm)."""

    question_id: str
    arm: str
    reference_logprob: float | None = None  # best over the references, nats per token
    best_reference: str | None = None
    choice_correct: float | None = None  # 1.0 / 0.0 (a mean is the accuracy); None without
    choice_rank: int | None = None       # distractors
    choices: int | None = None           # the reference + the distractors scored
    distractors: list[str] | None = None

    def to_record(self) -> dict[str, Any]:
        """The fields a results record carries."""
        return {"ref_logprob": self.reference_logprob, "ref_best": self.best_reference,
                "mc_correct": self.choice_correct, "mc_rank": self.choice_rank,
                "mc_choices": self.choices, "mc_distractors": self.distractors}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_question(question_id: str, arm: str, references: Sequence[str],
                   distractors: Sequence[str], scores: Sequence[float | None]) -> KnowledgeScore:
    """Assemble one question's score from the scores of its references then its distractors."""
    ref_scores = list(scores[:len(references)])
    best, at = best_reference(ref_scores)
    choice = multiple_choice(best, scores[len(references):])
    return KnowledgeScore(
        question_id=question_id, arm=arm, reference_logprob=best,
        best_reference=references[at] if at is not None else None,
        choice_correct=None if choice is None else float(choice.correct),
        choice_rank=None if choice is None else choice.rank,
        choices=None if choice is None else choice.choices,
        distractors=list(distractors) if distractors else None)


def cache_key(comparison: Any, arm: str, prompt: str, continuations: Sequence[str]) -> str:
    """Same weights, adapter, index, template and prompt, same texts scored: same numbers.
    ``comparison``: anything with ``identity(arm)`` (a :class:`compara.comparison.Comparison`).

    Unlike an answer's key, the decoding settings are left out: they do not change a
    probability.
    """
    ident = {k: v for k, v in comparison.identity(arm).items() if k not in ("arm", "decoding")}
    blob = json.dumps({"v": LIKELIHOOD_VERSION, "identity": ident, "prompt": prompt,
                       "continuations": list(continuations)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def chance_level(scores: Iterable[KnowledgeScore]) -> float | None:
    """The multiple-choice accuracy of guessing: the mean of 1 / choices."""
    levels = [1.0 / s.choices for s in scores if s.choices]
    return sum(levels) / len(levels) if levels else None
