"""`compara finetune`, `compara merge` and `compara models`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from compara.cli.utils import (
    ConfigOption,
    JsonOption,
    SetOption,
    fail,
    launch_config,
    load_experiment,
    print_json,
)

QuantizeOption = Annotated[str | None, typer.Option(
    "--quantize", help="Base weights: 4bit (NF4, QLoRA), 8bit or none. Default: the config's "
                       "model.quantize (4bit).", show_default=False)]
DeviceOption = Annotated[str | None, typer.Option(
    "--device", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N.", show_default=False)]
DtypeOption = Annotated[str | None, typer.Option(
    "--dtype", help="auto, bfloat16, float16, float32.", show_default=False)]


def finetune(
    data: Annotated[Path | None, typer.Option(
        "--data", "-d", help="Ingest folder (instructions.train/val.jsonl) or one JSONL file. "
                             "Default: the config's paths.data.", show_default=False)] = None,
    base: Annotated[str | None, typer.Option(
        "--base", "-b", help="Base model: a registry name (`compara models`), a local Hugging "
                             "Face folder, or a hub id. Default: the config's model.base.",
        show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output (adapter) folder. Default: the config's paths.adapter.",
        show_default=False)] = None,
    quantize: QuantizeOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    epochs: Annotated[float | None, typer.Option(
        "--epochs", help="Passes over the training split.", show_default=False)] = None,
    max_steps: Annotated[int | None, typer.Option(
        "--max-steps", help="Stop after this many optimizer steps (overrides --epochs).",
        show_default=False)] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate.",
                                             show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", help="Examples per device per step.", show_default=False)] = None,
    grad_accum: Annotated[int | None, typer.Option(
        "--grad-accum", help="Batches accumulated per optimizer step.", show_default=False)] = None,
    max_length: Annotated[int | None, typer.Option(
        "--max-length", help="Tokens per example; longer ones are cut and counted.",
        show_default=False)] = None,
    eval_steps: Annotated[int | None, typer.Option(
        "--eval-steps", help="Eval loss (and a checkpoint) every N steps.",
        show_default=False)] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of data order and LoRA init.",
                                             show_default=False)] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the interrupted run in OUT from its last checkpoint.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Train even when the planned time exceeds finetune.max_hours.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Tokenize the data, plan the run and build the model wrapper as "
                          "training would; print it all, train and write nothing.")] = False,
    accelerate: Annotated[Path | None, typer.Option(
        "--accelerate", help="With --dry-run: build the wrapper as under `accelerate launch "
                             "--config_file FILE` (its processes, FSDP).",
        show_default=False)] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Fine-tune a LoRA adapter (QLoRA by default) on the instruction set.

    Only the responses are learned (prompt tokens are masked out of the loss) and every
    response ends with the EOS token, which is learned too, so the model stops by itself.
    Eval loss on the val split every --eval-steps; the best and the last checkpoints are kept;
    --resume continues an interrupted run. The run is planned first (train tokens, the rate
    and its source, as `compara plan` shows): one over finetune.max_hours is refused unless
    --force; finetune.max_train_tokens keeps the records that fit, by fact coverage. OUT ends up with the adapter, the prompt template,
    the tokenizer, config.yaml, metrics.jsonl, loss.png and summary.json. Runs unchanged under
    `accelerate launch -m compara finetune ...` on several GPUs.
    """
    from finetune.train import run_finetune

    cfg = load_experiment(
        config, set_, model__base=base, model__quantize=quantize, model__device=device,
        model__dtype=dtype, finetune__epochs=epochs, finetune__max_steps=max_steps,
        finetune__lr=lr, finetune__batch_size=batch_size, finetune__grad_accum=grad_accum,
        finetune__max_length=max_length, finetune__eval_steps=eval_steps, finetune__seed=seed,
        paths__data=str(data) if data else None, paths__adapter=str(out) if out else None)
    if not cfg.paths.data:
        fail("no data: pass --data or set paths.data in the config")
    if not cfg.paths.adapter:
        fail("no output folder: pass --out or set paths.adapter in the config")
    if dry_run:
        from finetune.train import dry_run as plan_only

        if accelerate is not None:
            launch_config(accelerate)  # a clear error for a missing or malformed file
        info = plan_only(cfg, cfg.paths.data, accelerate)
        if json_:
            print_json(info)
        else:
            print_dry_run(info)
        return
    if accelerate is not None:
        fail("--accelerate is for --dry-run; to train, run `accelerate launch --config_file "
             f"{accelerate} -m compara finetune ...`")
    summary = run_finetune(cfg, cfg.paths.data, cfg.paths.adapter, resume=resume, force=force)
    if json_:
        print_json(summary)
    else:
        print_summary(summary, cfg.paths.adapter)


def print_dry_run(d: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    plan = d["plan"]
    rate = plan["rate"]
    hours = ("unknown (no sourced rate: measured on the loaded model when training starts)"
             if plan["hours"] is None else f"{plan['hours']:.2f} h")
    rows = [
        ("base", f"{d['base']['base']} ({d['base']['quantize']}, {d['base']['device']}, "
                 f"{d['base']['dtype']})"),
        ("launch", f"{d['distributed']}, {d['world_size']} process(es)"
                   + (f" ({d['launch']})" if d["launch"] else "")),
        ("data", f"{d['train_records']} train / {d['val_records']} val records; "
                 f"{d['examples_per_step']} examples per optimizer step"),
        ("wrapper", f"{d['trainable_parameters']:,} trainable of {d['parameters']:,} "
                    f"parameters; LoRA {', '.join(d['lora_dtype'])}; 4-bit storage "
                    f"{', '.join(d['quant_storage']) or '—'}; fused head loss "
                    f"{'on' if d['fused_head'] else 'off'}"),
        ("plan", f"{plan['train_tokens']:,} train tokens at "
                 + ("an unknown rate" if rate["value"] is None
                    else f"{rate['value']:,} tokens/s ({rate['source']})") + f": {hours}"),
    ]
    if plan["max_hours"] is not None:
        rows.append(("budget", f"finetune.max_hours={plan['max_hours']:g}: "
                               + ("OVER — training would be refused without --force"
                                  if plan["over_budget"] else "within")))
    table = Table(show_header=False, box=None)
    for k, v in rows:
        table.add_row(f"[bold]{k}[/]", v)
    Console().print(table)
    Console().print("dry run: nothing trained, nothing written")


def print_summary(s: dict[str, Any], out: str | Path) -> None:
    from rich.console import Console
    from rich.table import Table

    def f(v: Any) -> str:
        return "—" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    table = Table(show_header=False, box=None)
    data = s["data"]
    rows = [
        ("base", f"{s['base']['base']} ({s['quantize']}, {s['base']['device']}, "
                 f"{s['base']['dtype']})"),
        ("data", f"{data['used']['train']} train / {data['used']['val']} val records "
                 f"({sum(data['skipped'].values())} skipped, "
                 f"{sum(data['truncated_prompt'].values()) + sum(data['truncated_response'].values())}"
                 " truncated)"),
    ]
    budget = data.get("selection", {}).get("token_budget")
    if budget:
        rows.append(("token budget", f"kept {budget['records_kept']} of "
                                     f"{budget['records_before']} records, "
                                     f"{budget['tokens_kept']:,} of {budget['tokens_before']:,} "
                                     f"tokens (finetune.max_train_tokens="
                                     f"{budget['max_train_tokens']:,})"))
    plan = s.get("plan")
    if plan and plan.get("hours") is not None:
        rows.append(("plan", f"{plan['train_tokens']:,} train tokens at "
                             f"{plan['rate']['value']:,} tokens/s: {plan['hours']:.2f} h"
                             + (" (over finetune.max_hours, --force)" if plan["forced"] else "")))
    rows += [
        ("steps", f"{s['steps']} ({s['epochs']} epochs)"),
        ("eval loss", f"{f(s['eval_loss_start'])} → {f(s['eval_loss_final'])} "
                      f"(best {f(s['eval_loss_best'])})"),
        ("train loss", f"{f(s['train_loss_first'])} → {f(s['train_loss_last'])}"),
        ("speed", f"{s['train_tokens_per_second']} train tokens/s, {s['train_seconds']} s training"),
        ("peak memory", f"{s['peak_rss_mib']} MiB RSS"),
    ]
    stop = s.get("stop_check")
    if stop:
        ft, bs = stop["finetuned"], stop["base"]
        rows.append(("stops on EOS", f"fine-tuned {ft['stopped']}/{ft['n']}, base "
                                     f"{bs['stopped']}/{bs['n']} (training prompts, "
                                     f"≤ {stop['max_new_tokens']} new tokens)"))
    rows.append(("adapter", f"{out} ({s['adapter']['kept']}: {s['adapter']['from_checkpoint']})"))
    for k, v in rows:
        table.add_row(f"[bold]{k}[/]", v)
    Console().print(table)


def merge(
    adapter: Annotated[Path, typer.Option("--adapter", "-a", help="Adapter folder "
                                          "(the --out of `compara finetune`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the merged model.")],
    dtype: Annotated[str, typer.Option(
        "--dtype", help="Precision of the merged weights: bfloat16 or float32 (never 4-bit: "
                        "merging into quantised weights changes the outputs).")] = "bfloat16",
    device: Annotated[str, typer.Option("--device", help="Where to merge: cpu or cuda.")] = "cpu",
    base: Annotated[str | None, typer.Option(
        "--base", help="Load the base from here instead of where it was at training (it must "
                       "be the same model).", show_default=False)] = None,
    json_: JsonOption = False,
) -> None:
    """Merge a LoRA adapter into a bf16/fp32 copy of its base model.

    The result is a standard Hugging Face folder that plain
    `AutoModelForCausalLM.from_pretrained` loads, with the tokenizer and prompt template.
    """
    from finetune.merge import merge_adapter

    try:
        info = merge_adapter(adapter, out, dtype=dtype, device=device, base=base)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if json_:
        print_json(info)
    else:
        typer.echo(f"merged {adapter} into {info['merged_from']['base']} ({dtype}): {out}")


def models(json_: JsonOption = False) -> None:
    """List the registered base models (offline defaults) and whether they are ready."""
    from core.models.convert import cached_path
    from core.models.registry import REGISTRY

    rows = []
    for spec in REGISTRY.values():
        cached = cached_path(spec)
        rows.append({"name": spec.name, "architecture": spec.architecture, "params": spec.params,
                     "licence": spec.licence, "licence_url": spec.licence_url,
                     "package": spec.package,
                     "installed": spec.available(), "converted": str(cached) if cached else None,
                     "install": spec.install, "description": spec.description})
    if json_:
        print_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "params", "licence", "status", "description")
    for r in rows:
        status = ("ready" if r["converted"] else "installed (prepared on first use)"
                  if r["installed"] else f"missing: {r['install']}")
        table.add_row(r["name"], r["params"], r["licence"], status, r["description"])
    Console().print(table)
    Console().print("Also accepted by --base: a local Hugging Face folder, or a hub id "
                    "(where the machine reaches the hub or has it cached).")


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
    app.command("merge")(merge)
    app.command("models")(models)
