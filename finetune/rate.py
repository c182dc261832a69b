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
        if family in FINETUNE_CPU and bf16_native:
            return FINETUNE_CPU[family]
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
    with the run's mix of lengths. The run's first examples alone are one kind (short fact
    records first, reading tasks last): a probe on them measured 193 tokens/s where the
    demo's tune then trained at 296 (a step of short examples pays the same fixed costs for
    fewer tokens)."""
    if len(items) <= n:
        return list(items)
    stride = len(items) / n
    return [items[int(i * stride)] for i in range(n)]


def probe_train_rate(model, examples, ft, steps: int = 3) -> Rate:
    """Train tokens/s measured here: real training steps (forward and backward through the
    adapter, the loss training uses, batches as training builds them) on examples spread
    over the run's own (:func:`spread`), after one warm-up step. No optimizer step: the LoRA
    weights do not change."""
    import torch

    from finetune.data import PackedCollator, PaddedCollator
    from finetune.loss import fusable_head, response_loss

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = fusable_head(base)
    pad = getattr(base.config, "pad_token_id", None) or 0
    collate = PackedCollator() if ft.packing else PaddedCollator(pad)
    device = next(model.parameters()).device
    size = max(1, ft.batch_size)
    batches = probe_batches(examples, size, steps, ft.group_by_length and not ft.packing)
    if ft.gradient_checkpointing:  # as the Trainer will (activation_checkpointing)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # the Trainer's mixed precision on a GPU (training_arguments: bf16, else fp16)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported()
                               else torch.float16)
                if device.type == "cuda" else contextlib.nullcontext())
    was_training = model.training
    model.train()
    seconds, tokens = 0.0, 0
    try:
        # the first batch once more ahead of the timed ones: the warm-up (allocations, kernels
        # for its shapes). A warm-up on a batch of its own left every timed batch's shapes cold:
        # on a 2-core EPYC that probe read 105-109 train tokens/s, this one 130, the run 145.
        for i, group in enumerate([batches[0], *batches] if len(batches) > 1 else batches):
            batch = collate([{"input_ids": e.input_ids, "labels": e.labels} for e in group])
            t0 = time.perf_counter()
            with autocast:
                loss, _ = response_loss(model, {k: v.to(device) for k, v in batch.items()},
                                        head, base.config)
            loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i or len(batches) == 1:  # the first step warms up (allocations, kernels)
                seconds += time.perf_counter() - t0
                tokens += sum(len(e.input_ids) for e in group)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return Rate(round(tokens / max(seconds, 1e-9), 1), "train tokens/s",
                f"{PROBED}: {len(batches)} training step(s) of {size} examples ({tokens:,} "
                "tokens, forward + backward) spread over the run's own data"
                + (", batched by length as training batches them" if
                   ft.group_by_length and not ft.packing else "") + ", after a warm-up step")


def probe_batches(examples: list, size: int, steps: int, by_length: bool) -> list[list]:
    """The probe's ``steps`` batches of ``size`` examples spread over the run's (:func:`spread`);
    ``by_length``: the picked examples sorted by length before they are batched, as training
    with ``group_by_length`` batches similar lengths together (a batch of mixed lengths pads
    every row to the longest, work the run does not do)."""
    picked = spread(examples, size * steps)
    if by_length:
        picked = sorted(picked, key=lambda e: len(e.input_ids))
    return [picked[i:i + size] for i in range(0, len(picked), size)]
