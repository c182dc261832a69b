"""Training beyond one GPU: an accelerate config as accelerate reads it, the environment
`accelerate launch` gives its processes, and the memory per GPU of a QLoRA run (derived part by
part as docs/finetune.md derives the 7B figure). Nothing here needs a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune.rate import model_params

# Shapes of the Llama 2 family (hidden size, layers, MLP width, vocabulary), from the models'
# config.json on the hub, for a base whose config is not on this machine.
LLAMA2_SHAPES = {7e9: (4096, 32, 11008, 32000), 13e9: (5120, 40, 13824, 32000),
                 70e9: (8192, 80, 28672, 32000)}


def read_launch_config(path: str | Path) -> dict[str, Any]:
    """An accelerate config file, read by accelerate's own loader: what the plan needs of it.
    A file that is not YAML (or JSON) raises ValueError with the parser's line and column."""
    import json

    import yaml
    from accelerate.commands.config.config_args import load_config_from_file

    try:
        cfg = load_config_from_file(str(path))
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ValueError(" ".join(str(exc).split())) from None
    dist = getattr(cfg.distributed_type, "value", str(cfg.distributed_type))
    return {"file": str(path), "distributed_type": dist,
            "num_processes": max(1, int(cfg.num_processes)),
            "num_machines": int(getattr(cfg, "num_machines", 1) or 1),
            "mixed_precision": str(getattr(cfg.mixed_precision, "value", cfg.mixed_precision)),
            "fsdp": dict(getattr(cfg, "fsdp_config", None) or {})}


def _shape(model_cfg) -> tuple[tuple[int, int, int, int] | None, str]:
    try:
        from transformers import AutoConfig

        from core.models.convert import cached_path
        from core.models.registry import REGISTRY

        spec = REGISTRY.get(model_cfg.base)
        where = cached_path(spec) if spec else model_cfg.base
        if where is not None:
            c = AutoConfig.from_pretrained(str(where), local_files_only=True)
            return ((c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.vocab_size),
                    "the model's config.json")
    except Exception:  # noqa: BLE001 - not on this machine: the table below
        pass
    params = model_params(model_cfg.base)
    if params and "llama" in Path(model_cfg.base).name.lower():
        size = min(LLAMA2_SHAPES, key=lambda p: abs(p - params))
        if abs(size - params) / size < 0.25:
            return LLAMA2_SHAPES[size], f"the Llama 2 {size / 1e9:.0f}B config.json"
    return None, ""


def gpu_memory(cfg, shards: int = 1, fsdp: bool = False) -> tuple[float | None, str]:
    """Peak memory per GPU of a QLoRA run, derived part by part as docs/finetune.md derives the
    7B figure (4-bit weights with double quantisation, bf16 embedding and head, LoRA with its
    optimizer states, checkpointed activations, the loss's head chunk, CUDA context and
    allocator slack); under FSDP the weights and LoRA states are divided among ``shards`` GPUs
    and one decoder layer is gathered at a time. Returns (bytes, how) or (None, why not)."""
    if cfg.model.quantize != "4bit":
        return None, "derived for 4-bit QLoRA only"
    shape, source = _shape(cfg.model)
    params = model_params(cfg.model.base)
    if shape is None or not params:
        return None, "the model's shape is unknown"
    hidden, layers, mlp, vocab = shape
    ft = cfg.finetune
    embed = 2 * vocab * hidden  # input embedding and output head, not quantised
    linear = params - embed
    weights = linear * (0.5 + 0.127 / 8) + embed * 2  # NF4 + double-quantised constants; bf16
    lora = layers * ft.lora_r * (4 * 2 * hidden + 3 * (hidden + mlp))  # 7 projections
    lora_bytes = lora * (4 + (2 if "8bit" in ft.optimizer else 8))  # bf16 w + g; Adam states
    tokens = ft.batch_size * ft.max_length
    kept = layers * tokens * hidden * 2 * (1 if ft.gradient_checkpointing else 12)
    recompute = tokens * mlp * 2 * 4 if ft.gradient_checkpointing else 0
    gathered = (linear / layers) * 0.5 * 2 if fsdp else 0  # one layer gathered, one prefetched
    total = (weights + lora_bytes) / shards + kept + recompute + gathered + 0.2e9 + 1.75e9
    how = (f"derived (docs/finetune.md's parts; shape from {source}): batch "
           f"{ft.batch_size} x {ft.max_length} tokens, gradient checkpointing "
           f"{'on' if ft.gradient_checkpointing else 'off'}"
           + (f", FSDP over {shards} GPUs" if fsdp else ", a whole 4-bit copy per GPU"))
    return round(total, -8), how


def launch_environment(path: str | Path) -> dict[str, str]:
    """The environment `accelerate launch --config_file PATH` gives the training processes
    (ACCELERATE_USE_FSDP, FSDP_*, ACCELERATE_MIXED_PRECISION, ...), derived by accelerate's own
    launcher code from the file, without starting anything."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "compara"])
    args, _, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args) if args.multi_gpu or args.use_fsdp else {}
    env["WORLD_SIZE"] = str(args.num_processes)
    return {k: v for k, v in env.items() if k.startswith(("ACCELERATE_", "FSDP_", "WORLD_SIZE"))}
