"""Did the model learn to stop? Greedy answers with the adapter on and off, classified.

An answer *stops* when the model emits EOS before the token budget runs out and has not fallen
into a loop (a word 3-gram repeated three times or more; words, not tokens, because tokenizers
that split numbers into digits repeat token 3-grams in any list of dates). The tunes this product replaces
failed exactly here: with pad == EOS and EOS masked out of the loss, the model never learned
to stop and repeated itself up to max_new_tokens.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

LOOP_REPEATS = 3


def has_loop(text: str, n: int = 3, repeats: int = LOOP_REPEATS) -> bool:
    """A word n-gram occurs ``repeats`` times or more."""
    words = text.split()
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return any(c >= repeats for c in grams.values())


def classify(tokens: Sequence[int], eos_ids: set[int], max_new_tokens: int,
             decode=None) -> dict[str, Any]:
    """How a generated continuation (prompt excluded) ended. ``decode`` turns token ids into
    text (for the loop test); without it the ids themselves are the "words"."""
    cut = next((i for i, t in enumerate(tokens) if t in eos_ids), None)
    body = list(tokens[:cut]) if cut is not None else list(tokens)
    loop = has_loop(decode(body) if decode else " ".join(map(str, body)))
    return {"eos": cut is not None, "hit_max": cut is None and len(tokens) >= max_new_tokens,
            "loop": loop, "stopped": cut is not None and not loop, "new_tokens": len(body)}


def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int,
             batch_size: int = 8) -> list[list[int]]:
    """Greedy continuations (token ids after the prompt, up to and including EOS)."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: dict[int, list[int]] = {}
    pad = tokenizer.pad_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                        add_special_tokens=True).to(device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad, use_cache=True)
        for row, i in zip(out[:, enc["input_ids"].shape[1]:].tolist(), idx, strict=True):
            # After EOS the batch is filled with pad: cut it.
            results[i] = row
    return [results[i] for i in range(len(prompts))]


def _eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.eos_token_id is not None:
        ids |= set(gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id])
    return ids


def stop_report(model, tokenizer, prompts: Sequence[str], max_new_tokens: int,
                batch_size: int = 8) -> dict[str, Any]:
    eos_ids = _eos_ids(model, tokenizer)
    outs = generate(model, tokenizer, prompts, max_new_tokens, batch_size)
    def decode(ids):
        return tokenizer.decode(ids, skip_special_tokens=True)

    rows = [classify(o, eos_ids, max_new_tokens, decode) for o in outs]
    n = len(rows)
    return {
        "n": n,
        "stopped": sum(r["stopped"] for r in rows),
        "stop_rate": round(sum(r["stopped"] for r in rows) / n, 4) if n else None,
        "eos": sum(r["eos"] for r in rows),
        "hit_max_new_tokens": sum(r["hit_max"] for r in rows),
        "loops": sum(r["loop"] for r in rows),
        "mean_new_tokens": round(sum(r["new_tokens"] for r in rows) / n, 1) if n else None,
        "samples": [tokenizer.decode(o, skip_special_tokens=True)[:300] for o in outs[:3]],
    }


def stop_check(model, tokenizer, template, records: Sequence[dict[str, Any]], n: int,
               max_new_tokens: int) -> dict[str, Any]:
    """Stop rates of the fine-tuned model and of the base (the same weights, adapter off) on
    ``n`` training prompts (a stable task-balanced choice)."""
    from finetune.data import balanced_subset

    chosen = balanced_subset(records, n)
    prompts = [template.render_record(r)[0] for r in chosen]
    was_training = model.training
    model.eval()
    use_cache = model.config.use_cache
    model.config.use_cache = True
    try:
        tuned = stop_report(model, tokenizer, prompts, max_new_tokens)
        off = model.disable_adapter() if hasattr(model, "disable_adapter") else (
            contextlib.nullcontext())
        with off:
            base = stop_report(model, tokenizer, prompts, max_new_tokens)
    finally:
        model.config.use_cache = use_cache
        model.train(was_training)
    return {"prompts": "training", "max_new_tokens": max_new_tokens, "finetuned": tuned,
            "base": base}
