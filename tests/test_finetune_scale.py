"""Training beyond one GPU, proved on the CPU: the accelerate configs under configs/accelerate/
parse with accelerate's own loader and agree with our settings, the launch environment they
give makes the wrapper FSDP needs (bf16 4-bit storage, the fused head off), and their plans
scale as data parallelism does. Nothing here runs on a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from compara.config import load_config

CONFIGS = ("one-gpu", "ddp-4gpu", "fsdp-qlora-8gpu")


def accelerate_config(repo_root: Path, name: str) -> Path:
    return repo_root / "configs" / "accelerate" / f"{name}.yaml"


@pytest.mark.parametrize("name", CONFIGS)
def test_each_accelerate_config_parses_and_agrees_with_the_gpu_config(repo_root, name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    path = accelerate_config(repo_root, name)
    launch = load_config_from_file(str(path))  # accelerate's loader refuses unknown keys
    assert isinstance(launch, ClusterConfig) and not launch.use_cpu
    gpu = load_config(repo_root / "configs" / "llama2-7b-gpu.yaml")
    # the Trainer's autocast (training_arguments) and accelerate's agree: bf16 on bf16 weights
    assert str(launch.mixed_precision.value if hasattr(launch.mixed_precision, "value")
               else launch.mixed_precision) == "bf16"
    assert gpu.model.dtype == "bfloat16" and gpu.model.quantize == "4bit"
    kind = launch.distributed_type.value
    expected = {"one-gpu": ("NO", 1), "ddp-4gpu": ("MULTI_GPU", 4),
                "fsdp-qlora-8gpu": ("FSDP", 8)}[name]
    assert (kind, launch.num_processes) == expected
    if kind == "FSDP":
        fsdp = launch.fsdp_config
        # QLoRA under FSDP: flat params of mixed trainable/frozen weights need
        # use_orig_params false; one copy of the weights read from disk, then broadcast
        assert fsdp["fsdp_use_orig_params"] is False
        assert fsdp["fsdp_cpu_ram_efficient_loading"] and fsdp["fsdp_sync_module_states"]
        assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"


@pytest.mark.parametrize("name", CONFIGS)
def test_the_launch_environment_sets_the_4bit_storage_fsdp_needs(repo_root, name, monkeypatch):
    import torch

    from core.models.loading import quantization_config
    from finetune.gpus import launch_environment

    env = launch_environment(accelerate_config(repo_root, name))
    assert int(env["WORLD_SIZE"]) == {"one-gpu": 1, "ddp-4gpu": 4, "fsdp-qlora-8gpu": 8}[name]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    storage = quantization_config("4bit", torch.bfloat16).bnb_4bit_quant_storage
    if name.startswith("fsdp"):
        assert storage == torch.bfloat16  # FSDP shards only float tensors of one dtype
    else:
        assert storage == torch.uint8  # packed 4-bit, as on one GPU


@pytest.mark.usefixtures("one_torch_thread")
def test_dry_run_builds_the_fsdp_wrapper_and_writes_nothing(repo_root, fixtures_dir, tmp_path):
    from finetune.train import dry_run

    cfg = load_config(repo_root / "configs" / "ci.yaml",
                      ["model.base=tiny-random-llama", "model.quantize=4bit", "model.device=cpu",
                       f"paths.adapter={tmp_path / 'adapter'}"])
    data = fixtures_dir / "instructions.jsonl"
    fsdp = dry_run(cfg, data, accelerate_config(repo_root, "fsdp-qlora-8gpu"))
    plain = dry_run(cfg, data)
    assert fsdp["world_size"] == 8 and plain["world_size"] == 1
    assert fsdp["distributed"] == "FSDP"
    # a float storage, the compute dtype of this CPU (bfloat16 with native bf16, else float32)
    assert fsdp["quant_storage"] in (["bfloat16"], ["float32"]) and plain["quant_storage"] == ["uint8"]
    assert fsdp["fused_head"] is False and plain["fused_head"] is True
    # FSDP's flat parameters need one dtype: LoRA weights in the storage dtype
    assert fsdp["lora_dtype"] == fsdp["quant_storage"]
    assert 0 < fsdp["trainable_parameters"] < fsdp["parameters"]
    # ci.yaml trains max_steps: 8 processes take 8 times the examples of one
    assert fsdp["examples_per_step"] == 8 * plain["examples_per_step"]
    assert fsdp["plan"]["train_tokens"] == pytest.approx(8 * plain["plan"]["train_tokens"], rel=0.01)
    assert not (tmp_path / "adapter").exists()


def test_plan_of_each_launch(repo_root, sample_ingest):
    from compara.plan import build_plan, read_launch_config

    def finetune(name: str, *overrides: str) -> dict:
        cfg = load_config(repo_root / "configs" / "llama2-7b-gpu.yaml",
                          [f"paths.data={sample_ingest}", *overrides])
        plan = build_plan(cfg, device="cuda", probe=False,
                          launch=read_launch_config(accelerate_config(repo_root, name)))
        return next(st for st in plan["stages"] if st["stage"] == "finetune")

    one, ddp = finetune("one-gpu"), finetune("ddp-4gpu")
    assert (one["world_size"], ddp["world_size"]) == (1, 4)
    assert ddp["inputs"]["examples_per_step"]["value"] == 4 * one["inputs"]["examples_per_step"]["value"]
    assert ddp["rate_reference_gpu"]["value"] == pytest.approx(4 * one["rate_reference_gpu"]["value"], rel=0.01)
    # DDP: a whole 4-bit copy on every GPU, the same memory per GPU as one
    mem_one = one["peak_memory_per_gpu_bytes"]
    assert mem_one["basis"] == "estimated" and 6e9 < mem_one["value"] < 10e9  # docs: ~8 GB
    assert ddp["peak_memory_per_gpu_bytes"]["value"] == mem_one["value"]
    big = "model.base=meta-llama/Llama-2-70b-hf"
    fsdp, alone = finetune("fsdp-qlora-8gpu", big), finetune("one-gpu", big)
    assert fsdp["world_size"] == 8
    # FSDP divides the ~35 GB of 4-bit weights among the 8 GPUs
    assert fsdp["peak_memory_per_gpu_bytes"]["value"] < alone["peak_memory_per_gpu_bytes"]["value"] / 2
    for st in (one, ddp, fsdp):
        assert st["rate_reference_gpu"]["source"] and st["rate_reference_gpu"]["bound"]


def test_plan_cli_reads_an_accelerate_config_and_refuses_another_file(repo_root, sample_ingest):
    import json

    from typer.testing import CliRunner

    from compara.cli import app

    args = ["plan", "-c", str(repo_root / "configs" / "llama2-7b-gpu.yaml"), "-s",
            f"paths.data={sample_ingest}", "--no-probe"]
    res = CliRunner().invoke(app, [*args, "--accelerate",
                                   str(accelerate_config(repo_root, "ddp-4gpu")), "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    assert plan["world_size"] == 4 and plan["launch"]["distributed_type"] == "MULTI_GPU"
    res = CliRunner().invoke(app, [*args, "--accelerate", str(repo_root / "configs" / "ci.yaml")])
    assert res.exit_code != 0 and "accelerate config" in res.output


def test_a_malformed_accelerate_file_is_one_error_line_naming_it(repo_root, tmp_path):
    """Not YAML: `compara plan` and `compara finetune --dry-run` say which file and where,
    with no traceback."""
    from typer.testing import CliRunner

    from compara.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("compute_environment: LOCAL_MACHINE\nnum_processes: [oops\n", encoding="utf-8")
    cfg = str(repo_root / "configs" / "ci.yaml")
    for cmd in (["plan", "-c", cfg, "--no-probe"], ["finetune", "-c", cfg, "--dry-run"]):
        res = CliRunner().invoke(app, [*cmd, "--accelerate", str(bad)])
        assert res.exit_code == 2, res.output
        assert "not an accelerate config" in res.output and "line 2" in res.output
        assert res.exception is None or isinstance(res.exception, SystemExit)  # no traceback


def test_the_training_rate_probe_takes_examples_spread_over_the_run():
    """The probe's steps hold the run's mix of lengths (reading tasks come last in a run's
    examples), not only its first, shortest examples."""
    from finetune.rate import spread

    items = list(range(100))
    picked = spread(items, 32)
    assert len(picked) == 32 and picked == sorted(set(picked))
    assert picked[0] == 0 and picked[-1] >= 90  # reaches the end of the list
    assert spread(items[:10], 32) == items[:10]


def test_the_probe_times_batches_of_the_kind_the_run_is_made_of():
    """The probe's batches are the epoch's own kind: every example once in batches of the
    run's size; with group_by_length, similar lengths together (far less padding than a
    shuffled order); the picks span the epoch's range of batch sizes, cheapest first."""
    from finetune.rate import batch_tokens, probe_picks, run_batches

    lengths = [(i * 37) % 100 + 1 for i in range(200)] + [1200] * 16  # facts, reading tasks
    for by_length in (True, False):
        epoch = run_batches(lengths, 8, by_length, seed=42)
        assert sorted(i for b in epoch for i in b) == list(range(len(lengths)))
        assert [len(b) for b in epoch] == [8] * 27
    grouped, shuffled = run_batches(lengths, 8, True, 42), run_batches(lengths, 8, False, 42)

    def padding(epoch):
        return sum(batch_tokens(b, lengths, True) - sum(lengths[i] for i in b) for b in epoch)

    assert padding(grouped) < padding(shuffled) / 4
    picks = probe_picks(grouped, lengths, 3, padded=True)
    sizes = sorted(batch_tokens(b, lengths, True) for b in grouped)
    cost = [batch_tokens(b, lengths, True) for b in picks]
    assert len(picks) == 3 and cost == sorted(cost) and len(set(cost)) == 3
    assert cost[0] <= sizes[len(sizes) // 3] and cost[-1] >= sizes[2 * len(sizes) // 3]
    assert probe_picks(grouped, lengths, 1, padded=True)[0] in grouped
    assert len(probe_picks(grouped[:2], lengths, 5, padded=True)) == 2


def test_the_probe_fits_a_fixed_and_a_per_token_cost():
    """Steps cost a fixed part plus a part per token: the fit recovers both from steps of
    different sizes, so a run of larger batches than the timed ones is not read as slow;
    an unphysical or underdetermined fit is proportional to tokens."""
    from finetune.rate import fit_step_time

    fixed, per_token = fit_step_time([(n, 2.0 + 0.004 * n) for n in (500, 900, 1700)])
    assert abs(fixed - 2.0) < 1e-9 and abs(per_token - 0.004) < 1e-12
    # time proportional to tokens at the measured rate when the fit cannot say more
    assert fit_step_time([(1000, 4.0)]) == (0.0, 0.004)
    assert fit_step_time([(1000, 4.0), (1000, 5.0)]) == (0.0, 0.0045)
    assert fit_step_time([(500, 5.0), (1000, 4.0)])[0] == 0.0  # slower on fewer tokens: noise
    assert fit_step_time([(500, 0.5), (1000, 4.0)])[0] == 0.0  # a negative fixed part


def test_the_probe_rate_is_the_epochs_tokens_over_the_fitted_time(monkeypatch):
    """On a tiny model with a clock where a step costs 1 s + 2 ms per token computed, the
    probe's rate is the epoch's tokens over that cost summed over the epoch's batches (packed
    or padded and grouped by length): five steps run, two warm-ups and three timed."""
    from types import SimpleNamespace

    from transformers import LlamaConfig, LlamaForCausalLM

    import finetune.loss as loss_mod
    from finetune import rate as rate_mod
    from finetune.config import FinetuneConfig
    from finetune.data import Example

    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=1, pad_token_id=0))
    lengths = [6 + (i * 7) % 20 for i in range(40)] + [45] * 4
    examples = [Example(list(range(1, n + 1)), [-100] * (n // 2) + list(range(n // 2 + 1, n + 1)))
                for n in lengths]
    now = [0.0]
    steps: list[int] = []
    real = loss_mod.response_loss

    def one_step(model, batch, head, config):  # the step's cost on the fake clock
        steps.append(batch["input_ids"].numel())
        now[0] += 1.0 + 0.002 * steps[-1]
        return real(model, batch, head, config)

    monkeypatch.setattr(loss_mod, "response_loss", one_step)
    monkeypatch.setattr(rate_mod, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    for packing in (True, False):
        steps.clear()
        ft = FinetuneConfig(batch_size=4, packing=packing, group_by_length=True)
        got = rate_mod.probe_train_rate(model, examples, ft, steps=3)
        epoch = rate_mod.run_batches(lengths, 4, not packing, ft.seed)
        seconds = sum(1.0 + 0.002 * rate_mod.batch_tokens(b, lengths, not packing) for b in epoch)
        assert got.value == pytest.approx(sum(lengths) / seconds, rel=1e-3)
        assert len(steps) == 5 and steps[0] == steps[1] == steps[2] and len(set(steps[2:])) == 3
        assert "1.00 s + 2.00 ms per token" in got.source
        assert all(p.grad is None for p in model.parameters())  # nothing left behind
