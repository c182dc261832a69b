"""Precision chosen for the machine: no bf16 compute on a CPU that only emulates it.

The CPU's features are simulated (the probe is patched, or oneDNN/ATen are limited by their
environment variables in a child process), so these tests pass on any CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core.config import ModelConfig
from core.models import loading


@pytest.fixture()
def no_native_bf16(monkeypatch):
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(loading, "cpu_capability", lambda: "AVX2")


@pytest.fixture()
def native_bf16(monkeypatch):
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(loading, "cpu_capability", lambda: "AVX512")


def test_auto_is_fp32_without_native_bf16_and_bf16_with_it(no_native_bf16, caplog, monkeypatch):
    import torch

    assert loading.resolve_dtype("auto", "cpu") == torch.float32
    with caplog.at_level("WARNING"):
        assert loading.resolve_dtype("bfloat16", "cpu") == torch.float32
    assert "no native bf16" in caplog.text
    assert loading.resolve_dtype("float32", "cpu") == torch.float32
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    assert loading.resolve_dtype("auto", "cpu") == torch.bfloat16
    assert loading.resolve_dtype("bfloat16", "cpu") == torch.bfloat16


def _bf16_matmuls(model, tokenizer) -> list[str]:
    """The matrix products of one forward pass and a few generated tokens that take bf16."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: list[str] = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            if any(k in name for k in ("mm", "linear", "addmm", "matmul", "baddbmm", "bmm")):
                flat = [a for a in args if isinstance(a, torch.Tensor)]
                if any(t.dtype == torch.bfloat16 for t in flat):
                    seen.append(name)
            return func(*args, **(kwargs or {}))

    enc = tokenizer(["Qual é a capital do Brasil?"], return_tensors="pt")
    with Watch(), torch.inference_mode():
        model.generate(**enc, max_new_tokens=3, do_sample=False,
                       pad_token_id=tokenizer.pad_token_id)
    return seen


def test_without_native_bf16_the_model_computes_in_fp32_and_says_so(no_native_bf16):
    import torch

    loaded = loading.load_base(ModelConfig(base="tiny-random-llama", quantize="none"))
    info = loaded.info
    assert info.dtype == "float32" and info.bf16_native is False and info.cpu_capability == "AVX2"
    floats = {p.dtype for p in loaded.model.parameters() if p.is_floating_point()}
    assert floats == {torch.float32}
    assert _bf16_matmuls(loaded.model, loaded.tokenizer) == []
    line = info.compute_line()
    assert "AVX2" in line and "no native bf16" in line and "float32" in line
    assert json.loads(json.dumps(info.to_dict()))["cpu_capability"] == "AVX2"


def test_with_native_bf16_the_model_computes_in_bf16(native_bf16):
    loaded = loading.load_base(ModelConfig(base="tiny-random-llama", quantize="none"))
    assert loaded.info.dtype == "bfloat16" and loaded.info.bf16_native is True
    assert "native bf16" in loaded.info.compute_line()
    assert _bf16_matmuls(loaded.model, loaded.tokenizer)  # the watch does see bf16 products


def test_4bit_compute_and_lora_weights_follow_the_cpu(no_native_bf16, tmp_path, repo_root,
                                                       fixtures_dir):
    import torch

    from compara.config import load_config
    from finetune.train import prepare

    cfg = load_config(repo_root / "configs" / "ci.yaml", ["finetune.lora_dtype=bfloat16"])
    prepared = prepare(cfg, fixtures_dir / "instructions.jsonl")
    model = prepared.loaded.model
    assert prepared.loaded.info.dtype == "float32"
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    assert trainable == {torch.float32}
    assert _bf16_matmuls(model, prepared.loaded.tokenizer) == []


def test_the_environment_variables_simulate_a_cpu_without_native_bf16():
    """ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY change what torch reports, so a machine with
    AVX512-BF16 can stand in for one without it (on a CPU that lacks it, nothing changes)."""
    code = ("import json, torch; from core.models import loading; "
            "print(json.dumps([loading.cpu_capability(), loading.cpu_has_native_bf16(), "
            "str(loading.resolve_dtype('auto', 'cpu'))]))")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    capability, native, dtype = json.loads(out.strip().splitlines()[-1])
    assert not capability.startswith("AVX512") and native is False and dtype == "torch.float32"
