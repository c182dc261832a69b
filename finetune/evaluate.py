"""Did the model learn to stop? Greedy answers with the adapter on and off, classified.

An answer *stops* when the model emits EOS before the token budget runs out and has not fallen
into a loop (a word 3-gram repeated three times or more; words, not tokens, because tokenizers
that split numbers into digits repeat token 3-grams in any list of dates). The tunes this product replaces
failed exactly here: with pad == EOS and EOS masked out of the loss, the model never learned
to stop and repeated itself up to max_new_tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from core.generation import Generation, generate, has_loop


def classify(gen: Generation, max_new_tokens: int) -> dict[str, Any]:
    """How a generated continuation ended: on EOS, at the token budget, in a loop."""
    loop = has_loop(gen.text)
    return {"eos": gen.stopped_on_eos,
            "hit_max": not gen.stopped_on_eos and gen.tokens_out >= max_new_tokens,
            "loop": loop, "stopped": gen.stopped_on_eos and not loop,
            "new_tokens": gen.tokens_out}


def stop_report(model, tokenizer, prompts: Sequence[str], max_new_tokens: int,
                batch_size: int = 16) -> dict[str, Any]:
    """Greedy answers to ``prompts`` (through the comparison's generation path), classified.

    A step costs about as much for 16 rows as for one on a CPU (it reads every weight once),
    and the base model rarely stops: large batches make the check several times cheaper."""
    from core.config import GenerationConfig

    decoding = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size)
    gens = generate(model, tokenizer, prompts, decoding)
    rows = [classify(g, max_new_tokens) for g in gens]
    n = len(rows)
    return {
        "n": n,
        "stopped": sum(r["stopped"] for r in rows),
        "stop_rate": round(sum(r["stopped"] for r in rows) / n, 4) if n else None,
        "eos": sum(r["eos"] for r in rows),
        "hit_max_new_tokens": sum(r["hit_max"] for r in rows),
        "loops": sum(r["loop"] for r in rows),
        "mean_new_tokens": round(sum(r["new_tokens"] for r in rows) / n, 1) if n else None,
        "samples": [g.text[:300] for g in gens[:3]],
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
