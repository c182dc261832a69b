"""Greedy decoding with continuous batching: a finished row leaves the batch at once and the
next prompt takes its place.

With ``model.generate`` a batch lasts as long as its longest answer: one answer that runs to
``max_new_tokens`` keeps every other row's slot busy. On a CPU a decoding step costs nearly
the same for one row as for twelve (it reads every weight once), so those idle slots are most
of the time a batch takes. Here the batch is refilled: each step feeds every active row its
next token, rows that end (EOS, a stop string, ``max_new_tokens``) leave, and waiting prompts
are prefilled (a few at a time: one pass over many long prompts is slower on a CPU than
several over a few) and join.

The rows share one key/value cache laid out as a left-padded batch (``transformers``'
``DynamicCache``, full and sliding-window layers alike): a joining row's cache is padded on the
left to the batch's length (or the batch's to the row's), so every row's real tokens end at
the same column, as in a left-padded ``generate`` call, and each row's position ids count its
own tokens. Columns that no row uses any more are cut off the left.

Used by :func:`core.generation.generate` for greedy decoding without a repetition penalty
or other logits processors (the default everywhere); anything else goes through
``model.generate``. A test checks that every answer is token for token what ``model.generate``
writes for its prompt alone, on a Llama and on a sliding-window Gemma 3.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# generation_config fields that make model.generate change the logits even when greedy
_PROCESSORS = ("suppress_tokens", "begin_suppress_tokens", "bad_words_ids", "sequence_bias",
               "forced_bos_token_id", "forced_eos_token_id", "no_repeat_ngram_size",
               "min_length", "min_new_tokens", "exponential_decay_length_penalty",
               "guidance_scale", "watermarking_config")


def supported(model, decoding) -> bool:
    """Whether this model and these settings decode here (greedy, plain logits, a dynamic
    key/value cache); else ``model.generate`` does."""
    from core.likelihood import accepts

    if decoding.do_sample or decoding.repetition_penalty != 1.0:
        return False
    if not accepts(model, "past_key_values"):
        return False
    gen = getattr(model, "generation_config", None)
    for name in _PROCESSORS:
        value = getattr(gen, name, None) if gen is not None else None
        # a forced token's id may be 0; the other settings are off at 0, [] or 1.0
        off = value is None if name.endswith("_token_id") else value in (None, 0, [], 1.0)
        if not off:
            return False
    return True


class Unsupported(RuntimeError):
    """The model's key/value cache is not one whose rows can join and leave, or the prompts
    leave nothing to prefill; found at the first prefill, before anything is generated."""


def joinable(cache) -> bool:
    """A ``DynamicCache`` of full and sliding-window layers (what ``_join`` and ``_keep`` know)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer).__name__ in ("DynamicLayer", "DynamicSlidingWindowLayer")
                                and isinstance(layer, DynamicLayer) for layer in layers)


@dataclass
class _Row:
    index: int  # position in the caller's list of prompts
    prompt: str
    next_token: int  # fed at the next step (the prompt's last token, then each new token)
    seen: int  # real tokens in the cache (the next token's position id)
    started: float
    new: list[int] = field(default_factory=list)


def _pad_left(tensor, width: int, dim: int):
    import torch

    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _join(cache, mask, other, other_mask):
    """``other``'s rows appended to ``cache``'s, right-aligned (left padding): returns the
    joined (cache, mask). Both caches come from the same model."""
    import torch

    if cache is None:
        return other, other_mask
    width = max(mask.shape[1], other_mask.shape[1])
    for mine, theirs in zip(cache.layers, other.layers, strict=True):
        stored = width if not getattr(mine, "is_sliding", False) else min(
            width, mine.sliding_window - 1)
        mine.keys = torch.cat([_pad_left(mine.keys, stored, 2), _pad_left(theirs.keys, stored, 2)])
        mine.values = torch.cat([_pad_left(mine.values, stored, 2),
                                 _pad_left(theirs.values, stored, 2)])
        if hasattr(mine, "cumulative_length"):
            mine.cumulative_length = width
    joined = torch.cat([_pad_left(mask, width, 1), _pad_left(other_mask, width, 1)])
    return cache, joined


def _keep(cache, mask, rows: list[int]):
    """Only ``rows`` of the batch, and the left columns no remaining row uses cut off."""
    import torch

    index = torch.tensor(rows, device=mask.device)
    cache.batch_select_indices(index)
    mask = mask[index]
    unused = int((mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())
    if unused:
        for layer in cache.layers:
            stored = layer.keys.shape[2]
            if hasattr(layer, "cumulative_length"):
                # a sliding layer keeps the last window - 1 columns: cut what it stores of them
                drop = max(0, unused - (layer.cumulative_length - stored))
                layer.cumulative_length -= unused
            else:
                drop = unused
            if drop:
                layer.keys = layer.keys[:, :, drop:]
                layer.values = layer.values[:, :, drop:]
        mask = mask[:, unused:]
    return cache, mask


def prefill_groups(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive rows of a batch of prompts (their token ``lengths``) grouped so that each
    group's rows x its longest prompt stays within ``budget`` tokens (a group has one row at
    least; ``budget`` 0: one group). A left-padded pass costs rows x width, padding included."""
    groups: list[list[int]] = []
    width = 0
    for j, length in enumerate(lengths):
        wider = max(width, length)
        if groups and (budget <= 0 or (len(groups[-1]) + 1) * wider <= budget):
            groups[-1].append(j)
            width = wider
        else:
            groups.append([j])
            width = length
    return groups


def _rows_of(enc, group: list[int], width: int) -> dict[str, Any]:
    """Rows ``group`` of a left-padded tokenised batch, as if tokenised alone: the columns of
    padding they all share cut off the left, to the longest one's ``width``."""
    return {key: enc[key][group][:, -width:] for key in ("input_ids", "attention_mask")}


def generate_continuous(model, tokenizer, prompts: Sequence[str], decoding,
                        stop_strings: Sequence[str], eos: set[int],
                        score: Sequence[Sequence[str]] | None,
                        on_done: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Greedy continuations of ``prompts``, at most ``decoding.batch_size`` rows at a time;
    prompts that join are prefilled in groups of at most ``decoding.prefill_tokens`` tokens
    (:func:`prefill_groups`).

    Returns, per prompt in the order given: ``ids`` (the new tokens, EOS and what follows a
    stop string included as generated), ``eos`` (ended on EOS), ``latency_s`` (from the
    prompt's prefill to its last token), ``tokens_in``, ``scores`` and ``scoring_s`` (as
    :func:`core.generation.generate`). ``on_done(n)`` is called as rows finish.
    """
    import torch

    from core.generation import StopCheck
    from core.likelihood import accepts, prefix_cache, score_on_prefix

    device = next(model.parameters()).device
    check = StopCheck(tokenizer, stop_strings)
    slots = max(1, decoding.batch_size)
    queue = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[dict[str, Any] | None] = [None] * len(prompts)
    rows: list[_Row] = []
    cache = mask = None
    keep_logits = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}

    def admit() -> None:
        take = [queue.pop(0) for _ in range(min(slots - len(rows), len(queue)))]
        enc = tokenizer([prompts[i] for i in take], return_tensors="pt", padding=True).to(device)
        if enc["input_ids"].shape[1] < 2:  # one-token prompts (the shortest, admitted first)
            raise Unsupported("prompts of one token leave nothing to prefill")
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        for group in prefill_groups(lengths, decoding.prefill_tokens):
            prefill([take[j] for j in group], _rows_of(enc, group, max(lengths[j] for j in group)))

    def prefill(take: list[int], enc) -> None:
        nonlocal cache, mask
        texts = [prompts[i] for i in take]
        t0 = time.perf_counter()
        new_cache = prefix_cache(model, enc["input_ids"], enc["attention_mask"])
        if not joinable(new_cache):
            raise Unsupported(f"{type(new_cache).__name__}: rows cannot join this cache")
        scored, scoring_s = None, 0.0
        if score is not None and any(score[i] for i in take):
            s0 = time.perf_counter()
            scored = score_on_prefix(model, tokenizer, new_cache, enc, [score[i] for i in take],
                                     texts, max(slots, 8))
            scoring_s = time.perf_counter() - s0
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        for j, i in enumerate(take):
            out[i] = {"tokens_in": int(lengths[j]),
                      "scores": scored[j] if scored is not None and score[i] else None,
                      "scoring_s": round(scoring_s / len(take), 4)}
            rows.append(_Row(index=i, prompt=prompts[i],
                             next_token=int(enc["input_ids"][j, -1]), seen=int(lengths[j]) - 1,
                             started=t0 + scoring_s))
        cache, mask = _join(cache, mask, new_cache, enc["attention_mask"][:, :-1])

    with torch.inference_mode():
        while queue or rows:
            if queue and len(rows) < slots:
                admit()
            ids = torch.tensor([[r.next_token] for r in rows], device=device)
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            pos = torch.tensor([[r.seen] for r in rows], device=device)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                           past_key_values=cache, use_cache=True, **keep_logits).logits
            chosen = logits[:, -1, :].argmax(dim=-1).tolist()
            now = time.perf_counter()
            staying = []
            for j, (row, token) in enumerate(zip(rows, chosen, strict=True)):
                row.new.append(token)
                row.seen += 1
                row.next_token = token
                ended_eos = token in eos
                if ended_eos or check(row.new, row.prompt) or len(row.new) >= decoding.max_new_tokens:
                    out[row.index].update(ids=list(row.new), eos=ended_eos,
                                          latency_s=round(now - row.started, 4))
                else:
                    staying.append(j)
            if len(staying) < len(rows):
                done = len(rows) - len(staying)
                rows = [rows[j] for j in staying]
                if rows:
                    cache, mask = _keep(cache, mask, staying)
                else:
                    cache = mask = None
                if on_done is not None:
                    on_done(done)
    return out  # type: ignore[return-value]
