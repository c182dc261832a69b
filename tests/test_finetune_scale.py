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
    assert fsdp["quant_storage"] == ["bfloat16"] and plain["quant_storage"] == ["uint8"]
    assert fsdp["fused_head"] is False and plain["fused_head"] is True
    # FSDP's flat parameters need one dtype: LoRA weights in the storage dtype
    assert fsdp["lora_dtype"] == ["bfloat16"]
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


def test_the_probe_batches_by_length_as_training_does():
    """With group_by_length (no packing) the probe's batches hold similar lengths, as the run's
    do; without it they keep the spread order. Either way: steps batches of size examples."""
    from types import SimpleNamespace

    from finetune.rate import probe_batches

    lengths = [(i * 37) % 100 + 1 for i in range(200)]  # lengths in no order
    examples = [SimpleNamespace(input_ids=[0] * n) for n in lengths]
    grouped = probe_batches(examples, 8, 3, by_length=True)
    mixed = probe_batches(examples, 8, 3, by_length=False)
    for batches in (grouped, mixed):
        assert [len(b) for b in batches] == [8, 8, 8]
    assert ({id(e) for b in grouped for e in b} == {id(e) for b in mixed for e in b})

    def padding(batches):  # pad tokens a padded collator adds
        return sum(max(len(e.input_ids) for e in b) * len(b) - sum(len(e.input_ids) for e in b)
                   for b in batches)

    assert padding(grouped) < padding(mixed) / 2
