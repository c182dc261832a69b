"""Generation with one set of decoding settings: batched, timed, streamed, honest about stopping.

Every arm of the comparison and the fine-tuning stop check generate through here, so decoding
is identical everywhere: greedy by default (or seeded sampling), the same ``max_new_tokens``,
and stopping only on the tokenizer's EOS — a model that never learned to stop shows it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

LOOP_REPEATS = 3


@dataclass
class Generation:
    """One continuation (the prompt excluded)."""

    text: str
    token_ids: list[int]  # new tokens, up to (not including) EOS
    tokens_in: int
    tokens_out: int
    latency_s: float  # wall time of the generate call that produced it (its whole batch)
    stopped_on_eos: bool
    batch_size: int = 1

    @property
    def tokens_per_s(self) -> float | None:
        return round(self.tokens_out / self.latency_s, 2) if self.latency_s > 0 else None


def has_loop(text: str, n: int = 3, repeats: int = LOOP_REPEATS) -> bool:
    """A word n-gram occurs ``repeats`` times or more: the model is looping."""
    words = text.split()
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return any(c >= repeats for c in grams.values())


def eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.eos_token_id is not None:
        ids |= set(gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id])
    return {i for i in ids if i is not None}


def decoding_kwargs(decoding, tokenizer) -> dict[str, Any]:
    """``model.generate`` keyword arguments for a :class:`compara.config.GenerationConfig`."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": decoding.max_new_tokens,
        "do_sample": decoding.do_sample,
        "repetition_penalty": decoding.repetition_penalty,
        "pad_token_id": tokenizer.pad_token_id,
        "use_cache": True,
    }
    if decoding.do_sample:
        kwargs.update(temperature=decoding.temperature, top_p=decoding.top_p, top_k=decoding.top_k)
    else:  # greedy: leave the sampling knobs unset so transformers does not warn
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def _split(row: Sequence[int], stop: set[int]) -> tuple[list[int], bool]:
    for i, t in enumerate(row):
        if t in stop:
            return list(row[:i]), True
    return list(row), False


def generate(model, tokenizer, prompts: Sequence[str], decoding,
             on_batch: Callable[[int], None] | None = None) -> list[Generation]:
    """Continuations of ``prompts`` in batches of ``decoding.batch_size`` (similar lengths
    together, left padding), in the order given."""
    import torch

    device = next(model.parameters()).device
    stop = eos_ids(model, tokenizer)
    kwargs = decoding_kwargs(decoding, tokenizer)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: dict[int, Generation] = {}
    size = max(1, decoding.batch_size)
    for start in range(0, len(order), size):
        idx = order[start:start + size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        if decoding.do_sample:
            torch.manual_seed(decoding.seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        elapsed = time.perf_counter() - t0
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        for row, i, n_in in zip(new, idx, lengths, strict=True):
            ids, stopped = _split(row, stop)
            ids = [t for t in ids if t != tokenizer.pad_token_id]
            results[i] = Generation(
                text=tokenizer.decode(ids, skip_special_tokens=True).strip(), token_ids=ids,
                tokens_in=int(n_in), tokens_out=len(ids), latency_s=round(elapsed, 4),
                stopped_on_eos=stopped, batch_size=len(idx))
        if on_batch is not None:
            on_batch(len(idx))
    return [results[i] for i in range(len(prompts))]


def _cancel_criteria(event):
    """A stopping criterion that ends generation as soon as ``event`` is set."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool,
                              device=input_ids.device)

    return StoppingCriteriaList([Cancelled()])


def generate_stream(model, tokenizer, prompt: str, decoding) -> Iterator[str | Generation]:
    """Yield the text as it is generated (pieces of text), then the final :class:`Generation`.

    Closing the generator early (the consumer stopped reading: a cancelled request, a browser
    session gone) stops the generation thread and waits for it, so nothing keeps running on
    the model after the caller has let go of it (and of its lock).
    """
    import threading

    import torch
    from transformers import TextIteratorStreamer

    device = next(model.parameters()).device
    stop = eos_ids(model, tokenizer)
    enc = tokenizer([prompt], return_tensors="pt").to(device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = decoding_kwargs(decoding, tokenizer)
    cancel = threading.Event()
    kwargs["stopping_criteria"] = _cancel_criteria(cancel)
    holder: dict[str, Any] = {}

    def work() -> None:
        try:
            if decoding.do_sample:
                torch.manual_seed(decoding.seed)
            with torch.inference_mode():
                holder["out"] = model.generate(**enc, **kwargs, streamer=streamer)
        except BaseException as exc:  # surfaced in the caller's thread below
            holder["error"] = exc
            streamer.end()

    t0 = time.perf_counter()
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        for piece in streamer:
            if piece:
                yield piece
    finally:  # also on GeneratorExit: stop the worker before letting go of the model
        if thread.is_alive():
            cancel.set()
        thread.join()
    elapsed = time.perf_counter() - t0
    if "error" in holder:
        raise holder["error"]
    row = holder["out"][0, enc["input_ids"].shape[1]:].tolist()
    ids, stopped = _split(row, stop)
    yield Generation(text=tokenizer.decode(ids, skip_special_tokens=True).strip(), token_ids=ids,
                     tokens_in=int(enc["input_ids"].shape[1]), tokens_out=len(ids),
                     latency_s=round(elapsed, 4), stopped_on_eos=stopped)
