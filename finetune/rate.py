"""Train tokens/s of a fine-tuning run, each figure with its source: the measured rates of the
bundled models on a CPU, a probe of this machine, and the tokens a run trains on. The
published figures behind the rates are listed in docs/plan.md."""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH = "BENCHMARKS.md"


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


def train_tokens_of_run(ft, lengths: list[int], world_size: int = 1) -> int:
    """Tokens the run trains on: the training set x epochs, or max_steps' batches."""
    if not lengths:
        return 0
    if ft.max_steps:
        mean = sum(lengths) / len(lengths)
        return int(ft.max_steps * ft.batch_size * ft.grad_accum * world_size * mean)
    return int(sum(lengths) * ft.epochs)


def probe_train_rate(model, examples, max_tokens: int = 256) -> Rate:
    """Train tokens/s measured here: one forward pass over a few training examples (after one
    warm-up pass), divided by 3 for the backward pass (training ~3x the forward FLOPs)."""
    import torch

    from finetune.data import PackedCollator

    feats, n = [], 0
    for ex in examples:
        if feats and n + len(ex.input_ids) > max_tokens:
            break
        feats.append({"input_ids": ex.input_ids[:max_tokens], "labels": ex.labels[:max_tokens]})
        n += len(feats[-1]["input_ids"])
    batch = PackedCollator()(feats)
    device = next(model.parameters()).device
    inputs = {k: batch[k].to(device) for k in ("input_ids", "position_ids")}
    was_training = model.training
    model.eval()
    seconds = 0.0
    with torch.no_grad():
        for i in range(2):
            t0 = time.perf_counter()
            model(**inputs)
            seconds = time.perf_counter() - t0 if i else seconds
    model.train(was_training)
    return Rate(round(n / (3 * max(seconds, 1e-9)), 1), "train tokens/s",
                f"probe here: forward pass of {n} tokens, x3 for forward + backward")
