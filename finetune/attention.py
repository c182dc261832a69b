"""Attention of a packed batch computed example by example.

A packed batch (``finetune.packing``) is one row holding several examples end to end, positions
restarting at 0 at each. transformers masks such a row block-diagonally, but with the ``sdpa``
kernel it still computes attention over the whole row: the cost grows with the square of the
row's length, not with the sum of the squares of its examples'. For a row of eight 1,200-token
reading tasks that is eight times the work needed, and most of a training step on a CPU (62%
of a four-example step of Gemma 3 270M measured on a 2-core EPYC; 41 train tokens/s packed
against 134 for one example alone).

Here the same ``sdpa`` attention runs once per example of the row, causal within it, with the
layer's sliding window where the example is longer than the window: the same result as the
block-diagonal mask (tested), for the cost of the examples' own attention. transformers'
``flash_attention_2`` does the same with one variable-length kernel on a GPU that has it; this
is the path for the other devices.

It is switched on by :func:`use_packed_attention` on a model that uses ``sdpa``; inside
:func:`packed_rows` (entered by the training loss for a packed batch) the model's attention
and mask functions take the per-example path; outside it (generation, padded batches) they are
transformers' ``sdpa`` unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any

NAME = "compara_packed_sdpa"
# The lengths of the examples of the packed row being computed (None outside a packed forward).
_LENGTHS: contextvars.ContextVar[tuple[int, ...] | None] = contextvars.ContextVar(
    "compara_packed_lengths", default=None)
_REGISTERED = False


def packed_lengths(position_ids) -> tuple[int, ...] | None:
    """The lengths of the examples of a packed row (positions restarting at 0), or None when
    ``position_ids`` is not one row of two or more examples."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[0] != 1:
        return None
    pos = position_ids[0].tolist()
    starts = [i for i, p in enumerate(pos) if p == 0]
    if not starts or starts[0] != 0 or len(starts) < 2:
        return None
    if any(pos[i] != pos[i - 1] + 1 for i in range(1, len(pos)) if pos[i] != 0):
        return None  # not consecutive positions within an example: leave it to transformers
    ends = [*starts[1:], len(pos)]
    return tuple(e - s for s, e in zip(starts, ends, strict=True))


@contextlib.contextmanager
def packed_rows(position_ids, attention_mask=None):
    """Within, a forward pass of a model switched by :func:`use_packed_attention` computes the
    attention of this packed row example by example (no-op for anything but a packed row
    without an attention mask)."""
    lengths = packed_lengths(position_ids) if attention_mask is None else None
    token = _LENGTHS.set(lengths)
    try:
        yield lengths
    finally:
        _LENGTHS.reset(token)


def _sliding_causal(n: int, window: int, device):
    import torch

    i = torch.arange(n, device=device)
    dist = i[:, None] - i[None, :]
    return ((dist >= 0) & (dist < window))[None, None]


def _attention(module, query, key, value, attention_mask, dropout: float = 0.0,
               scaling: float | None = None, sliding_window: int | None = None, **kwargs):
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    # Inside packed_rows, its lengths (found once per forward, not once per layer). A layer
    # recomputed in the backward pass (gradient checkpointing) runs outside it: it reads them
    # from the row's positions, which the model passes it (Llama, Gemma, Mistral, Qwen do). A
    # packed row reaches here without a mask only from packed_rows (transformers builds a
    # block-diagonal mask for it otherwise).
    lengths = _LENGTHS.get() or (
        packed_lengths(kwargs.get("position_ids")) if attention_mask is None else None)
    n = query.shape[2]
    if (lengths is None or query.shape[0] != 1 or key.shape[2] != n or sum(lengths) != n):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, sliding_window=sliding_window, **kwargs)
    kwargs.pop("is_causal", None)
    outs = []
    start = 0
    for length in lengths:
        end = start + length
        mask = (_sliding_causal(length, sliding_window, query.device)
                if sliding_window and length > sliding_window else None)
        out, _ = sdpa_attention_forward(
            module, query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], mask,
            dropout=dropout, scaling=scaling, is_causal=mask is None, **kwargs)
        outs.append(out)  # (1, length, heads, head_dim)
        start = end
    return torch.cat(outs, dim=1), None


def _mask(*args: Any, **kwargs: Any):
    from transformers.masking_utils import sdpa_mask

    if _LENGTHS.get() is not None:
        return None  # the attention builds each example's own mask
    return sdpa_mask(*args, **kwargs)


def _register() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, _mask)
    _REGISTERED = True


def use_packed_attention(model) -> bool:
    """Switch a model that uses ``sdpa`` attention to the per-example path for packed rows
    (identical elsewhere). Returns whether it was switched."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) not in ("sdpa", NAME):
        return False
    _register()
    if config._attn_implementation != NAME:
        model.set_attn_implementation(NAME)
    return model.config._attn_implementation == NAME
