"""`compara merge`: fold a LoRA adapter into a full-precision copy of its base model.

The adapter is merged into bf16 or fp32 weights, never into the 4-bit ones: merging into a
quantised base re-quantises the sum and changes the outputs. The result is a standard Hugging
Face folder (``AutoModelForCausalLM.from_pretrained(out)`` loads it) with the tokenizer as
prepared for training and the prompt template the adapter was trained with.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from core.io import InputError, atomic_write_json

log = logging.getLogger(__name__)


def merge_adapter(adapter_dir: str | Path, out: str | Path, *, dtype: str = "bfloat16",
                  device: str = "cpu", base: str | None = None) -> dict[str, Any]:
    """Merge ``adapter_dir`` into its base (loaded unquantised in ``dtype``) and save ``out``.

    ``base`` overrides where the base model is loaded from (e.g. the folder moved); it must
    still be the model the adapter was trained on.
    """
    from core.config import ModelConfig
    from core.models import attach_adapter, load_base, read_adapter_summary

    if dtype not in ("bfloat16", "float32"):
        raise ValueError(f"merge dtype must be bfloat16 or float32, not {dtype!r}")
    adapter_dir, out = Path(adapter_dir), Path(out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty: choose another --out or delete it")
    start = time.monotonic()
    summary = read_adapter_summary(adapter_dir)
    trained = summary["base"]
    cfg = ModelConfig(base=base or trained["base"], quantize="none", dtype=dtype, device=device)
    loaded = load_base(cfg)
    tuned = attach_adapter(loaded, adapter_dir)
    log.info("Merging %s into %s (%s)", adapter_dir, loaded.info.base, dtype)
    merged = tuned.model.merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        merged.save_pretrained(tmp)
        tuned.tokenizer.save_pretrained(tmp)
        tuned.adapter.template.save(tmp)
        info = {
            "merged_from": {"adapter": str(adapter_dir.resolve()), "base": loaded.info.base,
                            "base_fingerprint": loaded.info.fingerprint},
            "dtype": dtype, "trained_quantize": summary.get("quantize"),
            "template": summary.get("template"), "seconds": round(time.monotonic() - start, 1),
        }
        atomic_write_json(tmp / "merge_info.json", info)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("Merged model written to %s", out)
    return {"out": str(out), **info}
