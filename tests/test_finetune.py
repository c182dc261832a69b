"""Fine-tuning on the tiny random Llama: masking, EOS, QLoRA steps, outputs, resume, merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compara.config import ModelConfig, load_config
from core.io import InputError
from core.prompts import PromptTemplate
from finetune.data import IGNORE, PackedCollator, PaddedCollator, encode, load_splits

TINY = "tiny-random-llama"


pytestmark = pytest.mark.usefixtures("one_torch_thread")
# Enough steps at a high learning rate for the tiny model to move visibly.
FAST = ["finetune.max_steps=8", "finetune.eval_steps=4", "finetune.batch_size=4",
        "finetune.lr=5e-3", "finetune.warmup_ratio=0", "finetune.lora_dropout=0",
        "finetune.max_length=128", "finetune.stop_check=4",
        "finetune.stop_check_max_new_tokens=8", f"model.base={TINY}", "model.quantize=4bit"]


def experiment(repo_root: Path, *overrides: str):
    return load_config(repo_root / "configs" / "ci.yaml", [*FAST, *overrides])


@pytest.fixture(scope="module")
def tiny():
    from core.models import load_base

    return load_base(ModelConfig(base=TINY, quantize="none"))


@pytest.fixture(scope="module")
def records(fixtures_dir):
    return [json.loads(line) for line in (fixtures_dir / "instructions.jsonl").open()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, repo_root, fixtures_dir):
    """One short QLoRA run shared by the tests that inspect its output."""
    from finetune.train import run_finetune

    out = tmp_path_factory.mktemp("adapter")
    summary = run_finetune(experiment(repo_root), fixtures_dir / "instructions.jsonl", out)
    return out, summary


# -- tokens -----------------------------------------------------------------------------------

def test_prompt_is_masked_and_eos_is_learned(tiny, records):
    tok, tpl = tiny.tokenizer, PromptTemplate.load()
    assert tok.pad_token_id != tok.eos_token_id
    for rec in records:
        ex = encode(tok, tpl, rec, 512)
        prompt, response = tpl.render_record(rec)
        prompt_ids = tok(prompt).input_ids  # exactly what inference feeds the model
        n = len(prompt_ids)
        assert ex.input_ids[:n] == prompt_ids
        assert ex.labels[:n] == [IGNORE] * n  # -100 exactly over the prompt ...
        assert IGNORE not in ex.labels[n:]  # ... and nowhere else
        assert ex.labels[-1] == tok.eos_token_id == ex.input_ids[-1]  # EOS learned
        assert tok.decode(ex.labels[n:-1]).strip() == response


def test_over_long_examples_are_cut_and_counted(tiny, records):
    from finetune.data import DataReport, encode_all

    tok, tpl = tiny.tokenizer, PromptTemplate.load()
    long_input = dict(records[1], input="palavra " * 300)
    ex = encode(tok, tpl, long_input, 128)
    assert ex.truncated == "prompt" and len(ex.input_ids) <= 128
    assert ex.labels[-1] == tok.eos_token_id  # the answer is whole, so it still ends
    prompt_ids = tok(tpl.render_record(long_input)[0]).input_ids
    n_prompt = sum(label == IGNORE for label in ex.labels)
    half = n_prompt - n_prompt // 2
    assert ex.input_ids[:half] == prompt_ids[:half]  # head of the template kept
    assert ex.input_ids[half:n_prompt] == prompt_ids[len(prompt_ids) - n_prompt // 2:]
    long_output = dict(records[1], output="resposta longa " * 200)
    ex = encode(tok, tpl, long_output, 128)
    assert ex.truncated == "response" and len(ex.input_ids) == 128
    assert tok.eos_token_id not in ex.labels  # cut mid-answer: must not learn to stop there
    report = DataReport()
    encode_all(tok, tpl, [records[1], long_input, long_output], 128, "train", report)
    assert report.truncated_prompt["train"] == 1 and report.truncated_response["train"] == 1


def test_packed_batches_give_the_padded_loss(tiny, records):
    import torch

    from finetune.loss import fusable_head, response_loss

    tok, tpl = tiny.tokenizer, PromptTemplate.load()
    feats = [vars(encode(tok, tpl, r, 128)) for r in records[:5]]
    feats = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in feats]
    packed = PackedCollator()(feats)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    assert (packed["position_ids"][0] == 0).sum() == len(feats)
    model = tiny.model.float()
    head = fusable_head(model)
    assert head is None  # trainable head: the plain path
    model.lm_head.weight.requires_grad_(False)
    head = fusable_head(model)
    try:
        losses = []
        for batch in (packed, PaddedCollator(tok.pad_token_id)(feats)):
            for h in (head, None):
                with torch.no_grad():
                    loss, count = response_loss(model, batch, h, model.config)
                losses.append(loss.item())
                assert count.item() == sum(sum(x != IGNORE for x in f["labels"]) for f in feats)
        with torch.no_grad():  # the model's own loss, per response token
            ref = model(**PaddedCollator(tok.pad_token_id)(feats)).loss.item()
    finally:
        model.lm_head.weight.requires_grad_(True)
        tiny.model.to(torch.bfloat16)
    assert losses == pytest.approx([ref] * 4, rel=1e-4)


def test_fused_head_gradient_matches_autograd():
    import torch

    from finetune.loss import fused_head_cross_entropy

    torch.manual_seed(0)
    weight = torch.randn(50, 8, dtype=torch.float64)
    targets = torch.tensor([1, 7, IGNORE, 49, 0])
    for softcap in (None, 3.0):
        h1 = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
        h2 = h1.detach().clone().requires_grad_(True)
        fused = fused_head_cross_entropy(h1, weight, None, targets, softcap)
        logits = h2 @ weight.T
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        ref = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        (2 * fused).backward()
        (2 * ref).backward()
        assert fused.item() == pytest.approx(ref.item(), rel=1e-6)
        assert torch.allclose(h1.grad, h2.grad, atol=1e-6)


def test_fused_head_loss_over_many_chunks_of_a_wide_vocabulary(monkeypatch):
    """Chunks of positions (several, the last one short) over a vocabulary wider than the
    kernels' vector width, in fp32: the loss and gradient of the plain cross-entropy."""
    import torch

    from finetune import loss

    monkeypatch.setattr(loss, "CHUNK_ELEMENTS", 4099 * 3)  # 3 positions per chunk
    torch.manual_seed(1)
    weight = torch.randn(4099, 16) * 0.5
    targets = torch.randint(0, 4099, (11,))
    targets[[2, 9]] = IGNORE
    h1 = torch.randn(11, 16, requires_grad=True)
    h2 = h1.detach().double().requires_grad_(True)
    fused = loss.fused_head_cross_entropy(h1, weight, None, targets)
    ref = torch.nn.functional.cross_entropy(h2 @ weight.double().T, targets, reduction="sum")
    fused.backward()
    ref.backward()
    assert fused.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(h1.grad.double(), h2.grad, atol=1e-5)
    assert h1.grad[[2, 9]].abs().max() == 0  # ignored positions get no gradient


# -- data errors ------------------------------------------------------------------------------

def test_bad_records_are_skipped_and_named(tmp_path, records):
    path = tmp_path / "instructions.train.jsonl"
    lines = [json.dumps(records[0]), "{not json", json.dumps({"instruction": "Sem resposta?"}),
             json.dumps(dict(records[1], output="  ")), json.dumps(records[2])]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    train, val, report = load_splits(path)
    assert len(train) + len(val) == 2
    assert report.read["train"] == 5 and report.skipped["train"] == 3
    problems = "\n".join(report.problems)
    assert f"{path}:2: invalid JSON" in problems
    assert f"{path}:3: record has no 'output'" in problems
    assert f"{path}:4: record's 'output' is empty" in problems


def test_unusable_data_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no instructions.train.jsonl"):
        load_splits(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        load_splits(tmp_path / "nada.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        load_splits(empty)
    no_output = tmp_path / "x.jsonl"
    no_output.write_text(json.dumps({"instruction": "Pergunta?"}) + "\n")
    with pytest.raises(InputError, match=r"no usable records.*x.jsonl:1: record has no 'output'"):
        load_splits(no_output)


def test_val_split_and_subset_are_stable(fixtures_dir):
    a = load_splits(fixtures_dir / "instructions.jsonl", val_fraction=0.3)
    b = load_splits(fixtures_dir / "instructions.jsonl", val_fraction=0.3)
    assert [r["id"] for r in a[0]] == [r["id"] for r in b[0]] and a[1] and a[0]
    sub, _, _ = load_splits(fixtures_dir / "instructions.jsonl", val_fraction=0.3, max_train=4)
    assert len(sub) == 4 and len({r["task"] for r in sub}) >= 3  # task-balanced


# -- training ---------------------------------------------------------------------------------

def test_qlora_run_writes_a_self_describing_folder(trained):
    out, s = trained
    for name in ("adapter_model.safetensors", "adapter_config.json", "prompt_template.json",
                 "tokenizer.json", "config.yaml", "metrics.jsonl", "loss.png", "summary.json",
                 "README.md"):
        assert (out / name).is_file(), name
    assert s == json.loads((out / "summary.json").read_text())
    assert s["steps"] == 8 and s["quantize"] == "4bit" and s["base"]["base"] == TINY
    assert s["data"]["used"]["train"] > 0 and len(s["data"]["sha256"]["train"]) == 64
    assert s["train_tokens"] > 0 and s["train_tokens_per_second"] > 0 and s["peak_rss_mib"] > 0
    assert {"torch", "transformers", "peft", "bitsandbytes"} <= set(s["versions"])
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert f"checkpoint-{s['steps']}" in ckpts and s["best_checkpoint"] in ckpts
    assert len(ckpts) <= 2  # the best and the last
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    steps = [m["step"] for m in metrics if m["kind"] == "train"]
    assert steps == list(range(1, 9))
    evals = [m for m in metrics if m["kind"] == "eval"]
    assert [m["step"] for m in evals] == [0, 4, 8]
    assert s["eval_loss_best"] < s["eval_loss_start"]  # it learned something


def test_adapter_weights_changed(trained):
    from safetensors.torch import load_file

    out, _ = trained
    weights = load_file(str(out / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero


def test_reload_generate_and_switch_the_adapter_off(trained, records):
    import torch

    from core.models import attach_adapter, load_base

    out, s = trained
    loaded = load_base(load_config(out / "config.yaml").model)
    tuned = attach_adapter(loaded, out)
    tpl = tuned.adapter.template
    assert tpl == PromptTemplate.from_dir(out) and tpl.fingerprint == s["template"]["fingerprint"]
    prompt = tpl.render_record(records[0])[0]
    assert prompt == PromptTemplate.load().render_record(records[0])[0]  # byte-identical
    enc = tuned.tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        on = tuned.model(**enc).logits
        with tuned.adapter_disabled():
            off = tuned.model(**enc).logits
        gen = tuned.model.generate(**enc, max_new_tokens=6, do_sample=False)
    assert not torch.allclose(on, off)  # one copy of the weights, two behaviours
    new = gen[0, enc["input_ids"].shape[1]:]
    assert 1 <= len(new) <= 6
    assert s["stop_check"]["finetuned"]["n"] == 4 and s["stop_check"]["base"]["n"] == 4


def test_a_running_folder_is_not_overwritten(trained, repo_root, fixtures_dir):
    from finetune.train import RunConflict, run_finetune

    out, _ = trained
    with pytest.raises(RunConflict, match="--resume"):
        run_finetune(experiment(repo_root), fixtures_dir / "instructions.jsonl", out)


def test_resume_after_an_interruption(tmp_path, repo_root, fixtures_dir):
    """Stopped right after a step (as if killed), then resumed: the same 8 steps, each logged
    once, and the same adapter as an uninterrupted run."""
    import torch
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from finetune.train import run_finetune

    class Crash(Exception):
        pass

    class CrashAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 6:
                raise Crash

    cfg = experiment(repo_root, "finetune.stop_check=0")
    data = fixtures_dir / "instructions.jsonl"
    whole = run_finetune(cfg, data, tmp_path / "whole")
    with pytest.raises(Crash):
        run_finetune(cfg, data, tmp_path / "cut", callbacks=[CrashAt()])
    assert not (tmp_path / "cut" / "summary.json").exists()
    assert (tmp_path / "cut" / "checkpoints" / "checkpoint-4").is_dir()
    resumed = run_finetune(cfg, data, tmp_path / "cut", resume=True)
    assert resumed["steps"] == whole["steps"] == 8 and resumed["resumed_from_step"] == 4
    metrics = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").open()]
    assert [m["step"] for m in metrics if m["kind"] == "train"] == list(range(1, 9))
    assert [m["step"] for m in metrics if m["kind"] == "eval"] == [0, 4, 8]
    a = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:  # equal up to bf16 rounding (the LoRA weights are bf16 on a 4-bit base)
        assert torch.allclose(a[k].float(), b[k].float(), rtol=0.02, atol=2e-3), k
    # A finished run resumed again is left alone.
    again = run_finetune(cfg, data, tmp_path / "cut", resume=True)
    assert again["finished"] == resumed["finished"]


def test_resume_refuses_other_data(tmp_path, repo_root, fixtures_dir, records):
    from finetune.train import RunConflict, run_finetune

    cfg = experiment(repo_root, "finetune.stop_check=0", "finetune.max_steps=4")
    run_finetune(cfg, fixtures_dir / "instructions.jsonl", tmp_path / "run")
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in records[:10]))
    with pytest.raises(RunConflict, match="data"):
        run_finetune(cfg, other, tmp_path / "run", resume=True)


def test_merge_equals_base_plus_adapter(trained, tmp_path, records):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.models import attach_adapter, load_base
    from finetune.merge import merge_adapter

    out, _ = trained
    info = merge_adapter(out, tmp_path / "merged", dtype="bfloat16")
    assert info["dtype"] == "bfloat16"
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")  # plain transformers
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert tok.pad_token_id != tok.eos_token_id
    assert not any("lora" in name for name, _ in merged.named_parameters())
    tuned = attach_adapter(load_base(ModelConfig(base=TINY, quantize="none",
                                                 dtype="bfloat16")), out)
    enc = tok([PromptTemplate.load().render_record(records[3])[0]], return_tensors="pt")
    with torch.no_grad():
        a = merged.to(torch.bfloat16)(**enc).logits.float()
        b = tuned.model(**enc).logits.float()
    assert (a - b).abs().max() < 0.05 * b.abs().max()
    with pytest.raises(InputError, match="not empty"):
        merge_adapter(out, tmp_path / "merged")


# -- command line -----------------------------------------------------------------------------

def test_cli_finetune_and_errors(tmp_path, repo_root, fixtures_dir):
    from typer.testing import CliRunner

    from compara.cli import app

    runner = CliRunner()
    ci = str(repo_root / "configs" / "ci.yaml")
    res = runner.invoke(app, ["finetune", "-c", ci, "--data", str(tmp_path / "none.jsonl"),
                              "--out", str(tmp_path / "a")])
    assert res.exit_code == 2 and "no such file" in res.output
    res = runner.invoke(app, ["finetune", "-c", ci, "--data",
                              str(fixtures_dir / "instructions.jsonl"), "--base", "nao-existe",
                              "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "nao-existe" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["finetune", "-c", ci, "--data",
                              str(fixtures_dir / "instructions.jsonl"), "--out",
                              str(tmp_path / "c"), "--max-steps", "2", "--eval-steps", "2",
                              "-s", "finetune.stop_check=0", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["steps"] == 2 and (tmp_path / "c" / "adapter_model.safetensors").is_file()
    res = runner.invoke(app, ["models", "--json"])
    assert res.exit_code == 0 and TINY in res.stdout


def test_killed_process_resumes(tmp_path, repo_root, fixtures_dir):
    """`compara finetune` killed with SIGKILL mid-run, then `--resume`: every step done once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "compara", "-q", "finetune", "-c",
           str(repo_root / "configs" / "ci.yaml"), "--data",
           str(fixtures_dir / "instructions.jsonl"), "--out", str(out), "--max-steps", "120",
           "--eval-steps", "10", "-s", "finetune.stop_check=0", "-s", "finetune.max_val_records=2"]
    env = {**os.environ, "PYTHONPATH": str(repo_root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=repo_root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "checkpoint-30" / "trainer_state.json").is_file():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    res = subprocess.run([*cmd, "--resume", "--json"], cwd=repo_root, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["steps"] == 120 and 30 <= summary["resumed_from_step"] < 120
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").open()]
    assert [m["step"] for m in metrics if m["kind"] == "train"] == list(range(1, 121))
    assert [m["step"] for m in metrics if m["kind"] == "eval"] == list(range(0, 121, 10))


def test_stop_classification():
    from core.generation import Generation
    from finetune.evaluate import classify, has_loop

    def gen(text, n, eos):
        return Generation(text=text, token_ids=list(range(n)), tokens_in=5, tokens_out=n,
                          latency_s=0.1, stopped_on_eos=eos)

    assert classify(gen("uma resposta curta", 3, True), 6) == {
        "eos": True, "hit_max": False, "loop": False, "stopped": True, "new_tokens": 3}
    assert classify(gen("sem fim à vista", 4, False), 4)["hit_max"]
    looping = gen("o rio é o rio é o rio é o rio é", 12, True)
    assert classify(looping, 20)["loop"] and not classify(looping, 20)["stopped"]
    # Words, not tokens: dates split into digits are no loop; a repeated phrase is.
    assert not has_loop("nasceu em 1746, casou em 1770 e morreu em 1792.")
    assert has_loop("feijoada de mandioca, feijoada de mandioca, feijoada de mandioca,")


def test_val_is_held_out_when_the_val_file_has_none_of_the_tasks(tmp_path, records):
    (tmp_path / "instructions.train.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records))
    only_definitions = [r for r in records if r["task"] == "definition"]
    (tmp_path / "instructions.val.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in only_definitions))
    train, val, report = load_splits(tmp_path, tasks=["infobox"], val_fraction=0.3)
    assert val and train and {r["task"] for r in train + val} == {"infobox"}
    assert not {r["id"] for r in train} & {r["id"] for r in val}
    assert "stable hash" in report.val_source


def test_a_prompt_never_ends_with_eos(tiny, records):
    class ClosingTokenizer:  # a tokenizer that appends EOS to every text it encodes
        eos_token_id = tiny.tokenizer.eos_token_id

        def __call__(self, text, add_special_tokens=True):
            ids = tiny.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
            return {"input_ids": ids + [self.eos_token_id]}

    ex = encode(ClosingTokenizer(), PromptTemplate.load(), records[0], 512)
    n_prompt = ex.labels.count(IGNORE)
    assert tiny.tokenizer.eos_token_id not in ex.input_ids[:n_prompt]
