"""The loss over the response tokens only, without materialising the logits of the prompt.

The output head of a small model with a big vocabulary dominates its cost: Gemma 3 270M
projects every position onto 262,144 tokens (168M multiply-adds per token, more than all its
transformer layers). The prompt's positions are masked out of the loss, so their logits are
never needed: the model is asked (``logits_to_keep`` as a boolean mask) for the positions whose
next token is a response token only.

For a plain linear head the head is skipped inside the model (it returns the hidden states)
and :class:`FusedHeadCrossEntropy` projects them in chunks, computing the gradient with respect
to the hidden states on the way, so no ``positions x vocabulary`` tensor ever exists in full.
"""

from __future__ import annotations

import contextlib
from typing import Any

from finetune.attention import packed_rows

IGNORE = -100
# Logit elements per chunk (64M floats = 256 MB): 256 positions of a 262k vocabulary, 2,048
# of a 32k one. Bigger chunks make better use of the head's matrix products: on a 2-core CPU
# 256 positions a chunk take 0.84x the time of 64 in bf16 and 0.70x in fp32 (bench/loss.py,
# BENCHMARKS.md), for ~0.3 GB more at the peak.
CHUNK_ELEMENTS = 1 << 26
# Config attributes that change the logits after the head; models with them use the plain path.
_LOGIT_TRANSFORMS = ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def _torch():
    import torch

    return torch


def _make_function():
    torch = _torch()

    class _FusedHeadCE(torch.autograd.Function):
        """sum over positions of CE(softcap(hidden @ W.T + b), target); W and b frozen."""

        @staticmethod
        def forward(ctx, hidden, weight, bias, targets, softcap, chunk):
            need_grad = hidden.requires_grad
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_hidden = torch.empty_like(hidden) if need_grad else None
            g = None
            for start in range(0, hidden.shape[0], chunk):
                h = hidden[start:start + chunk]
                t = targets[start:start + chunk]
                logits = torch.nn.functional.linear(h, weight, bias).float()
                capped = None
                if softcap:
                    capped = logits.div_(softcap).tanh_()
                    logits = capped * softcap
                valid = t != IGNORE
                safe = t.clamp(min=0)
                # Log-probabilities in place: one pass over the chunk where logsumexp, then
                # subtracting it, would make two full-size temporaries.
                logp = torch.log_softmax(logits, dim=-1, out=logits)
                total -= (logp.gather(1, safe[:, None]).squeeze(1) * valid).sum()
                if need_grad:
                    # d CE / d logits = softmax - onehot (in place: the logits are done with),
                    # zero on ignored positions.
                    g = logp.exp_()
                    g[torch.arange(g.shape[0], device=g.device), safe] -= 1.0
                    if not bool(valid.all()):
                        g[~valid] = 0.0
                    if capped is not None:
                        g *= 1.0 - capped * capped
                    grad_hidden[start:start + chunk] = g.to(weight.dtype) @ weight
                # the chunk's tensors go before the next chunk's are made
                logits = logp = g = capped = None
            ctx.save_for_backward(grad_hidden if need_grad else total)
            return total

        @staticmethod
        def backward(ctx, grad_out):
            (grad_hidden,) = ctx.saved_tensors
            return grad_hidden * grad_out.to(grad_hidden.dtype), None, None, None, None, None

    return _FusedHeadCE


_FUNCTION = None


def fused_head_cross_entropy(hidden, weight, bias, targets, softcap: float | None = None):
    """Summed cross-entropy of ``hidden @ weight.T (+ bias)`` against ``targets`` (-100 ignored)."""
    global _FUNCTION
    if _FUNCTION is None:
        _FUNCTION = _make_function()
    chunk = max(1, CHUNK_ELEMENTS // weight.shape[0])
    return _FUNCTION.apply(hidden, weight, bias, targets, softcap, chunk)


def fusable_head(model) -> Any | None:
    """The output head if it is a plain frozen linear layer we can fuse with the loss."""
    torch = _torch()
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.weight.requires_grad:
        return None
    if head.bias is not None and head.bias.requires_grad:
        return None
    cfg = model.config.get_text_config()
    if any(getattr(cfg, name, None) not in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS):
        return None
    return head


@contextlib.contextmanager
def head_returns_hidden(head, config):
    """Inside, ``head(x)`` returns ``x``: the model's "logits" are its final hidden states."""
    text_cfg = config.get_text_config()
    softcap = getattr(text_cfg, "final_logit_softcapping", None)
    hooked = head.__dict__.get("forward")  # accelerate's hooks also live here: keep them
    head.forward = lambda x: x  # the instance attribute shadows Linear.forward
    if softcap is not None:
        text_cfg.final_logit_softcapping = None
    try:
        yield softcap
    finally:
        if hooked is None:
            del head.forward
        else:
            head.forward = hooked
        if softcap is not None:
            text_cfg.final_logit_softcapping = softcap


def response_loss(model, inputs: dict[str, Any], head=None, config=None, num_items: Any = None):
    """Mean cross-entropy over the response tokens of a batch (``labels`` != -100).

    ``model`` is what the trainer calls (possibly wrapped by DDP/PEFT); ``head`` the fusable
    output layer of the underlying model (:func:`fusable_head`) and ``config`` its config, or
    None for the plain path. ``num_items``: the response tokens of the whole accumulated batch
    (the divisor), by default this batch's. Returns (loss, response tokens in this batch).
    """
    torch = _torch()
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    # Position t predicts token t+1: keep t where labels[t+1] is a response token.
    targets_full = torch.full_like(labels, IGNORE)
    targets_full[:, :-1] = labels[:, 1:]
    keep = targets_full != IGNORE
    targets = targets_full[keep]
    count = keep.sum()
    # a packed row's attention example by example (finetune.attention), where switched on
    packed = packed_rows(inputs.get("position_ids"), inputs.get("attention_mask"))
    if head is not None:
        with head_returns_hidden(head, config) as softcap, packed:
            out = model(**inputs, logits_to_keep=keep, use_cache=False)
        total = fused_head_cross_entropy(out.logits, head.weight, head.bias, targets, softcap)
    else:
        with packed:
            out = model(**inputs, logits_to_keep=keep, use_cache=False)
        logits = out.logits.reshape(-1, out.logits.shape[-1]).float()
        total = torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE,
                                                  reduction="sum")
    denom = torch.as_tensor(num_items if num_items is not None else count, device=total.device)
    return total / denom.clamp(min=1), count
