"""Generation with one set of decoding settings: batched, timed, streamed, honest about stopping.

Every arm of the comparison and the fine-tuning stop check generate through here, so decoding
is identical everywhere: greedy by default (or seeded sampling), the same ``max_new_tokens``,
the same stop strings. An answer ends on the tokenizer's EOS, on a stop string (the template's
next section marker, e.g. ``\n###``: the model has finished its answer and begins to write
the next section of the template), or at ``max_new_tokens``; each :class:`Generation` says
which (``finish_reason``), and its text never contains the stop string. ``stopped_on_eos``
stays: a model that never learned to stop still shows it. The fine-tuning stop check passes
no stop strings, since what it measures is EOS.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

LOOP_REPEATS = 3
FINISH_REASONS = ("eos", "stop_string", "max_tokens")


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
    finish_reason: str = "max_tokens"  # eos | stop_string | max_tokens
    # Mean log-probability per token of each text asked to be scored after this prompt
    # (``generate(score=...)``), from the prompt pass the answer was generated from; None
    # when nothing was asked. ``scoring_s``: this row's share of its batch's scoring time.
    scores: list[float | None] | None = None
    scoring_s: float = 0.0

    @property
    def ended_cleanly(self) -> bool:
        """Ended on EOS or at a stop string, not cut at ``max_new_tokens``."""
        return self.finish_reason != "max_tokens"

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
    """``model.generate`` keyword arguments for a :class:`core.config.GenerationConfig`."""
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


def stop_string_cut(text: str, stop_strings: Sequence[str], before: str = "") -> int | None:
    """Where the answer ends in ``text``: the start of the first stop string, or None.

    ``before`` is the end of the prompt: a stop string may begin there (the prompt ends with a
    newline and the model writes ``###`` at once); only a match that ends inside ``text``
    counts, so the prompt's own section markers never do. A stop string of white space only
    (a line break) counts only once the answer has begun, after its first visible character:
    a model may open its answer with a blank line.
    """
    if not stop_strings:
        return None
    context = before[-(max(len(s) for s in stop_strings) - 1):] if before else ""
    joined = context + text
    begun = len(text) - len(text.lstrip())  # where the answer's first visible character is
    cuts = []
    for s in stop_strings:
        if s.isspace():
            at = text.find(s, begun + 1) if begun < len(text) else -1
            if at >= 0:
                cuts.append(at)
            continue
        at = joined.find(s, max(0, len(context) - len(s) + 1))
        if at >= 0:
            cuts.append(max(0, at - len(context)))
    return min(cuts) if cuts else None


def _finish(tokenizer, row: Sequence[int], eos: set[int], stop_strings: Sequence[str],
            prompt: str) -> tuple[list[int], str, bool, str]:
    """(token ids, text, stopped_on_eos, finish_reason) of one generated row."""
    ids, stopped = _split(row, eos)
    ids = [t for t in ids if t != tokenizer.pad_token_id]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    cut = stop_string_cut(text, stop_strings, prompt)
    if cut is not None:  # the stop string came first: EOS, if any, was never generated
        text = text[:cut]
        keep = len(ids)
        while keep > 0 and len(tokenizer.decode(ids[:keep], skip_special_tokens=True)) > cut:
            keep -= 1
        return ids[:keep], text.strip(), False, "stop_string"
    return ids, text.strip(), stopped, "eos" if stopped else "max_tokens"


class StopCheck:
    """Whether a row's new tokens hold a stop string, by :func:`stop_string_cut` (the rule
    that cuts the answer afterwards). A stop string that appears ends in the newest token, so
    that token's text must hold the stop string's last character: only then is the row
    decoded whole (decoding every row at every step would cost more than the step itself
    with a large vocabulary)."""

    def __init__(self, tokenizer, stop_strings: Sequence[str]):
        self.tokenizer = tokenizer
        self.stop_strings = list(stop_strings)
        self.ends = {s[-1] for s in stop_strings} | {"\ufffd"}  # "\ufffd": part of a character
        self.piece: dict[int, bool] = {}  # token id -> its text holds a last character

    def __call__(self, new_ids: Sequence[int], before: str = "") -> bool:
        if not self.stop_strings or not new_ids:
            return False
        last = new_ids[-1]
        if last not in self.piece:
            text = self.tokenizer.decode([last], skip_special_tokens=True)
            self.piece[last] = any(ch in text for ch in self.ends)
        if not self.piece[last]:
            return False
        text = self.tokenizer.decode(list(new_ids), skip_special_tokens=True)
        return stop_string_cut(text, self.stop_strings, before) is not None


def stop_criteria(tokenizer, stop_strings: Sequence[str], prompts: Sequence[str] = (),
                  width: int = 0) -> list[Any]:
    """A stopping criterion for ``model.generate`` that ends a row as soon as its text holds a
    stop string (:class:`StopCheck`). ``prompts``: the batch's prompts, ``width``: the padded
    prompt length (new tokens start there)."""
    if not stop_strings:
        return []
    import torch
    from transformers import StoppingCriteria

    check = StopCheck(tokenizer, stop_strings)

    class TextStop(StoppingCriteria):
        def __init__(self):
            self.done: set[int] = set()

        def __call__(self, input_ids, scores, **kwargs):
            rows = input_ids.shape[0]
            if input_ids.shape[1] > width:
                for j in range(rows):
                    if j not in self.done and check(input_ids[j, width:].tolist(),
                                                    prompts[j] if j < len(prompts) else ""):
                        self.done.add(j)
            return torch.tensor([j in self.done for j in range(rows)], dtype=torch.bool,
                                device=input_ids.device)

    return [TextStop()]


def generate(model, tokenizer, prompts: Sequence[str], decoding,
             on_batch: Callable[[int], None] | None = None,
             stop_strings: Sequence[str] = (),
             score: Sequence[Sequence[str]] | None = None) -> list[Generation]:
    """Continuations of ``prompts``, ``decoding.batch_size`` at a time (shortest prompts
    first, left padding), in the order given; each row ends on EOS, at the first of
    ``stop_strings`` (cut off its text) or at ``max_new_tokens``. Greedy decoding refills the
    batch as rows end (:mod:`core.continuous`); sampling or a repetition penalty goes
    through ``model.generate`` batch by batch.

    ``score[i]``: texts to score after ``prompts[i]`` (a question's references and
    distractors; :attr:`Generation.scores`). Greedy decoding scores them on the prompt pass
    its answer goes on from (:func:`core.likelihood.prefix_cache`), so a long prompt is read
    once; the ``model.generate`` path scores them in a pass of their own
    (:func:`core.likelihood.reference_logprobs`). Generation is the same with or without
    ``score``.
    """
    import torch
    from transformers import StoppingCriteriaList

    if score is not None and len(score) != len(prompts):
        raise ValueError(f"{len(score)} lists of texts to score for {len(prompts)} prompts")
    stop = eos_ids(model, tokenizer)
    from core import continuous

    rows = None
    if prompts and continuous.supported(model, decoding):
        try:
            rows = continuous.generate_continuous(model, tokenizer, prompts, decoding,
                                                  stop_strings, stop, score, on_batch)
        except continuous.Unsupported as exc:  # found at the first prefill: nothing generated
            log.debug("continuous batching not available (%s): model.generate", exc)
    if rows is not None:
        gens = []
        for prompt, row in zip(prompts, rows, strict=True):
            ids, text, stopped, reason = _finish(tokenizer, row["ids"], stop, stop_strings, prompt)
            gens.append(Generation(
                text=text, token_ids=ids, tokens_in=row["tokens_in"], tokens_out=len(ids),
                latency_s=row["latency_s"], stopped_on_eos=stopped,
                batch_size=max(1, decoding.batch_size), finish_reason=reason,
                scores=row["scores"], scoring_s=row["scoring_s"]))
        return gens
    device = next(model.parameters()).device
    kwargs = decoding_kwargs(decoding, tokenizer)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: dict[int, Generation] = {}
    size = max(1, decoding.batch_size)
    for start in range(0, len(order), size):
        idx = order[start:start + size]
        batch_prompts = [prompts[i] for i in idx]
        enc = tokenizer(batch_prompts, return_tensors="pt", padding=True).to(device)
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        criteria = stop_criteria(tokenizer, stop_strings, batch_prompts, enc["input_ids"].shape[1])
        if criteria:
            kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
        if decoding.do_sample:
            torch.manual_seed(decoding.seed)
        scores: list[list[float | None]] | None = None
        scoring_s = 0.0
        if score is not None and any(score[i] for i in idx):
            from core.likelihood import logprobs_per_prompt

            s0 = time.perf_counter()
            scores = logprobs_per_prompt(model, tokenizer, batch_prompts,
                                         [score[i] for i in idx], size)
            scoring_s = time.perf_counter() - s0
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        elapsed = time.perf_counter() - t0
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        for j, (row, i, n_in) in enumerate(zip(new, idx, lengths, strict=True)):
            ids, text, stopped, reason = _finish(tokenizer, row, stop, stop_strings, prompts[i])
            results[i] = Generation(
                text=text, token_ids=ids, tokens_in=int(n_in), tokens_out=len(ids),
                latency_s=round(elapsed, 4), stopped_on_eos=stopped, batch_size=len(idx),
                finish_reason=reason,
                scores=None if scores is None or not score[i] else scores[j],
                scoring_s=round(scoring_s / len(idx), 4))
        if on_batch is not None:
            on_batch(len(idx))
    return [results[i] for i in range(len(prompts))]


def _cancel_criterion(event):
    """A stopping criterion that ends generation as soon as ``event`` is set."""
    import torch
    from transformers import StoppingCriteria

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool,
                              device=input_ids.device)

    return Cancelled()


class StopFilter:
    """Passes streamed text on, holding back what may be the start of a stop string and
    nothing from the first stop string on, so a reader never sees the marker."""

    def __init__(self, stop_strings: Sequence[str], before: str = ""):
        self.stop_strings = list(stop_strings)
        self.before = before
        self.seen = ""  # all text received
        self.sent = 0  # characters of ``seen`` passed on
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.seen += piece
        cut = stop_string_cut(self.seen, self.stop_strings, self.before)
        if cut is not None:
            self.stopped = True
            end = cut
        else:  # keep back a tail that a stop string could start with
            hold = max((k for s in self.stop_strings for k in range(1, len(s))
                        if self.seen.endswith(s[:k])), default=0)
            end = len(self.seen) - hold
        out = self.seen[self.sent:max(end, self.sent)]
        self.sent = max(end, self.sent)
        return out

    def flush(self) -> str:
        out = "" if self.stopped else self.seen[self.sent:]
        self.sent = len(self.seen)
        return out


def generate_stream(model, tokenizer, prompt: str, decoding,
                    stop_strings: Sequence[str] = ()) -> Iterator[str | Generation]:
    """Yield the text as it is generated (pieces of text), then the final :class:`Generation`.

    Closing the generator early (the consumer stopped reading: a cancelled request, a browser
    session gone) stops the generation thread and waits for it, so nothing keeps running on
    the model after the caller has let go of it (and of its lock).
    """
    import threading

    import torch
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    device = next(model.parameters()).device
    stop = eos_ids(model, tokenizer)
    enc = tokenizer([prompt], return_tensors="pt").to(device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = decoding_kwargs(decoding, tokenizer)
    cancel = threading.Event()
    kwargs["stopping_criteria"] = StoppingCriteriaList(
        [_cancel_criterion(cancel),
         *stop_criteria(tokenizer, stop_strings, [prompt], enc["input_ids"].shape[1])])
    shown = StopFilter(stop_strings, prompt)
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
            if piece := shown.feed(piece):
                yield piece
        if tail := shown.flush():
            yield tail
    finally:  # also on GeneratorExit: stop the worker before letting go of the model
        if thread.is_alive():
            cancel.set()
        thread.join()
    elapsed = time.perf_counter() - t0
    if "error" in holder:
        raise holder["error"]
    row = holder["out"][0, enc["input_ids"].shape[1]:].tolist()
    ids, text, stopped, reason = _finish(tokenizer, row, stop, stop_strings, prompt)
    yield Generation(text=text, token_ids=ids, tokens_in=int(enc["input_ids"].shape[1]),
                     tokens_out=len(ids), latency_s=round(elapsed, 4), stopped_on_eos=stopped,
                     finish_reason=reason)
