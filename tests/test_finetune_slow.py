"""Integration: the real bundled Llama-architecture model, fine-tuned for a few steps."""

from __future__ import annotations

import json

import pytest

from compara.config import load_config

pytestmark = pytest.mark.slow


def test_smollm2_qlora_few_steps(tmp_path, repo_root, fixtures_dir):
    from core.config import GenerationConfig
    from core.generation import generate
    from core.models import attach_adapter, load_base
    from finetune.train import run_finetune

    cfg = load_config(repo_root / "configs" / "ci.yaml", [
        "model.base=smollm2-135m", "model.quantize=4bit", "finetune.max_steps=6",
        "finetune.eval_steps=3", "finetune.batch_size=4", "finetune.lr=1e-3",
        "finetune.max_length=192", "finetune.stop_check=4", "finetune.stop_check_max_new_tokens=24"])
    out = tmp_path / "adapter"
    s = run_finetune(cfg, fixtures_dir / "instructions.jsonl", out)
    assert s["steps"] == 6 and s["base"]["architecture"] == "llama"
    tok = s["base"]["tokenizer"]
    assert tok["pad_id"] != tok["eos_id"] and tok["eos"] == "<|im_end|>"
    assert s["eval_loss_best"] < s["eval_loss_start"]
    assert s["stop_check"]["finetuned"]["n"] == 4
    # The adapter goes back onto a fresh copy of the base and answers.
    tuned = attach_adapter(load_base(load_config(out / "config.yaml").model), out)
    record = json.loads((fixtures_dir / "instructions.jsonl").open().readline())
    prompt = tuned.adapter.template.render_record(record)[0]
    (new,) = generate(tuned.model, tuned.tokenizer, [prompt], GenerationConfig(max_new_tokens=16))
    assert 1 <= new.tokens_out <= 16
