"""Train tokens/s of a fine-tuning run, each figure with its source: the measured rates of the
bundled models on a CPU, a probe of this machine, and the tokens a run trains on. The
published figures behind the rates are listed in docs/plan.md."""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH = "BENCHMARKS.md"
PROBED = "probe here"  # how the source of a rate measured on this machine begins


@dataclass
class Rate:
    """A throughput and where the figure comes from (value None: no sourced figure)."""

    value: float | None
    unit: str
    source: str
    bound: bool = False  # an upper bound (a datasheet peak), not a measured speed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Train tokens/s (prompt + response tokens of the training steps / their wall time).
FINETUNE_CPU = {
    "gemma3-270m": Rate(290.0, "train tokens/s",
                        f"{BENCH}: the demo tune, Gemma 3 270M 4-bit, 2-core AVX512-BF16 CPU, "
                        "load ~2 (55-78 at load 3-6)"),
    "smollm2-135m": Rate(345.0, "train tokens/s",
                         f"{BENCH}: bench/finetune.py, SmolLM2-135M 4-bit, 2-core AVX512-BF16 CPU"),
}
# The same on a CPU without native bf16 (fp32 compute).
FINETUNE_CPU_FP32 = {
    "gemma3-270m": Rate(160.0, "train tokens/s",
                        f"{BENCH}: the demo tune, Gemma 3 270M 4-bit, fp32 compute, 2-core Intel "
                        "Xeon as an AVX2-only CPU, before attention example by example (a "
                        "2-core AMD EPYC as AVX2: 83 before, 110 after)"),
}
LLAMA7B_CPU = Rate(8.0, "train tokens/s",
                   "measured on the project's 2-core build machine, 2026-11-21: a "
                   "Llama-2-7B-shaped model, QLoRA (docs/plan.md)")


def model_params(base: str) -> float | None:
    """Parameters of a base model from its registry entry or its name ('7b', '270m')."""
    try:
        from core.models.registry import REGISTRY

        spec = REGISTRY.get(base)
    except ImportError:  # pragma: no cover
        spec = None
    text = spec.params if spec else Path(base).name
    m = re.search(r"(\d+(?:\.\d+)?)\s*([bBmM])\b", text.replace("-", " ").replace("_", " "))
    if not m:
        return None
    return float(m.group(1)) * (1e9 if m.group(2) in "bB" else 1e6)


def model_family(base: str) -> str:
    name = Path(base).name.lower()
    params = model_params(base)
    if "llama" in name and params and 6e9 <= params <= 8e9:
        return "llama-7b"
    return name


def finetune_rate(model_cfg, device: str, bf16_native: bool = True) -> Rate:
    """Train tokens/s of this model on ``device`` from a sourced figure, or an unknown Rate."""
    family = model_family(model_cfg.base)
    if device == "cpu":
        sourced = FINETUNE_CPU if bf16_native else FINETUNE_CPU_FP32
        if family in sourced:
            return sourced[family]
        if family == "llama-7b":
            return LLAMA7B_CPU
    where = device if bf16_native or device != "cpu" else "a CPU without native bf16"
    return Rate(None, "train tokens/s", f"no measured figure for {model_cfg.base} on {where}")


def run_tokens(ft, epoch_tokens: float, records: float, world_size: int = 1) -> int:
    """Tokens a run trains on, from the tokens and records of one pass over its training set:
    ``epochs`` passes, or ``max_steps`` optimizer steps of ``batch_size`` x ``grad_accum``
    examples on each of ``world_size`` processes (data parallel: every process takes its own
    batches). The one rule of `compara finetune`'s budget check and of `compara plan`."""
    if not records:
        return 0
    if ft.max_steps:
        per_step = ft.batch_size * ft.grad_accum * world_size
        return int(ft.max_steps * per_step * epoch_tokens / records)
    return int(epoch_tokens * ft.epochs)


def train_tokens_of_run(ft, lengths: list[int], world_size: int = 1) -> int:
    """Tokens the run trains on, from the tokenized training examples (see :func:`run_tokens`)."""
    return run_tokens(ft, sum(lengths), len(lengths), world_size)


def spread(items: list, n: int) -> list:
    """``n`` items evenly spaced over ``items`` (all of them when there are fewer): a sample
    with the mix of the whole, not only its first items (e.g. the index probe's chunks: an
    article's first chunks are its lead)."""
    if len(items) <= n:
        return list(items)
    stride = len(items) / n
    return [items[int(i * stride)] for i in range(n)]


WARMUP_STEPS = 2  # untimed steps before the probe's timed ones


def probe_train_rate(model, examples, ft, steps: int = 3) -> Rate:
    """Train tokens/s measured here, for the run's own batches: real training steps (forward
    and backward through the adapter, the loss training uses) on ``steps`` of the batches one
    epoch of the run is made of (:func:`run_batches`), the cheapest twice first as a warm-up. A step
    costs a fixed part (the 4-bit weights unpacked in the forward and the backward pass, the
    kernels' set-up) plus a part per token, so a rate read on small batches is low for a run
    of large ones: the steps' times are fitted as ``a + b x tokens`` (least squares) and the
    rate is the run's tokens over the fit's time for every batch of the epoch. No optimizer
    step: the LoRA weights do not change."""
    import torch

    from finetune.data import PackedCollator, PaddedCollator
    from finetune.loss import fusable_head, response_loss

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = fusable_head(base)
    pad = getattr(base.config, "pad_token_id", None) or 0
    collate = PackedCollator() if ft.packing else PaddedCollator(pad)
    device = next(model.parameters()).device
    size = max(1, ft.batch_size)
    by_length = ft.group_by_length and not ft.packing
    lengths = [len(e.input_ids) for e in examples]
    epoch = run_batches(lengths, size, by_length, ft.seed)
    picked = probe_picks(epoch, lengths, steps, padded=not ft.packing)
    if ft.gradient_checkpointing:  # as the Trainer will (activation_checkpointing)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # the Trainer's mixed precision on a GPU (training_arguments: bf16, else fp16)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported()
                               else torch.float16)
                if device.type == "cuda" else contextlib.nullcontext())
    was_training = model.training
    model.train()
    measured: list[tuple[int, float]] = []  # (tokens computed, seconds) per timed step
    try:
        # the cheapest batch twice ahead of the timed ones: the warm-up (allocations, and the
        # first steps of a fresh process: one warm-up left the demo's rate read 17-30% low)
        for i, batch_ids in enumerate([picked[0]] * WARMUP_STEPS + picked):
            batch = collate([{"input_ids": examples[j].input_ids, "labels": examples[j].labels}
                             for j in batch_ids])
            t0 = time.perf_counter()
            with autocast:
                loss, _ = response_loss(model, {k: v.to(device) for k, v in batch.items()},
                                        head, base.config)
            loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= WARMUP_STEPS:
                measured.append((batch["input_ids"].numel(), time.perf_counter() - t0))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    fixed, per_token = fit_step_time(measured)
    seconds = sum(fixed + per_token * batch_tokens(b, lengths, not ft.packing) for b in epoch)
    tokens = sum(lengths)
    return Rate(round(tokens / max(seconds, 1e-9), 1), "train tokens/s",
                f"{PROBED}: {len(measured)} training step(s) of the run's own batches "
                f"({sum(n for n, _ in measured):,} tokens, forward + backward"
                + (", batched by length as training batches them" if by_length else "")
                + f"), fitted as {fixed:.2f} s + {per_token * 1000:.2f} ms per token a step "
                f"over the {len(epoch)} batches of an epoch")


def run_batches(lengths: list[int], size: int, by_length: bool, seed: int = 0) -> list[list[int]]:
    """The batches (example indices) of one epoch as the Trainer forms them: a shuffled order
    cut into batches of ``size``; ``by_length`` (group_by_length), megabatches of 50 batches
    of that order each sorted longest first before they are cut, as transformers'
    LengthGroupedSampler does. The same shuffle as the run's is not needed: the probe needs the
    run's kind of batches (how many tokens each computes), not its exact ones."""
    import random

    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    if by_length:
        mega = 50 * size
        order = [i for m in range(0, len(order), mega)
                 for i in sorted(order[m:m + mega], key=lambda i: -lengths[i])]
    return [order[i:i + size] for i in range(0, len(order), size)]


def batch_tokens(batch: list[int], lengths: list[int], padded: bool) -> int:
    """Tokens a step computes: every row padded to the longest, or (packing) the lengths."""
    if padded:
        return len(batch) * max(lengths[i] for i in batch)
    return sum(lengths[i] for i in batch)


def probe_picks(epoch: list[list[int]], lengths: list[int], steps: int,
                padded: bool) -> list[list[int]]:
    """``steps`` batches of the epoch at evenly spaced quantiles of the tokens they compute
    (the median for one step), cheapest first: the fit then spans the run's range of batch
    sizes without paying for its largest."""
    ranked = sorted(epoch, key=lambda b: batch_tokens(b, lengths, padded))
    steps = max(1, min(steps, len(ranked)))
    return [ranked[int((k + 0.5) * len(ranked) / steps)] for k in range(steps)]


def fit_step_time(measured: list[tuple[int, float]]) -> tuple[float, float]:
    """(seconds a step costs whatever its size, seconds per token) from (tokens, seconds) of
    timed steps, by least squares; a fit that is not physical (a negative part, steps of one
    size) falls back to time proportional to tokens."""
    n = len(measured)
    xs, ts = [x for x, _ in measured], [t for _, t in measured]
    proportional = (0.0, sum(ts) / max(sum(xs), 1))
    if n < 2:
        return proportional
    mx, mt = sum(xs) / n, sum(ts) / n
    var = sum((x - mx) ** 2 for x in xs)
    if not var:
        return proportional
    per_token = sum((x - mx) * (t - mt) for x, t in measured) / var
    fixed = mt - per_token * mx
    if per_token <= 0 or fixed < 0:
        return proportional
    return fixed, per_token
