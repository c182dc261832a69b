"""`compara finetune`: QLoRA (or LoRA) training of an adapter, resumable, self-describing.

The training loop is transformers' ``Trainer`` (so ``accelerate launch`` runs it on several
GPUs unchanged, and checkpoints carry optimizer, scheduler and RNG state for ``--resume``) with
a loss over the response tokens only (:mod:`finetune.loss`) and padding-free batches
(:class:`finetune.data.PackedCollator`). What lands in the output folder:

    adapter_model.safetensors, adapter_config.json   the adapter (best eval loss, or last)
    prompt_template.json                             the template it was trained with
    tokenizer files                                  the tokenizer, as prepared at load
    config.yaml                                      the resolved experiment config
    metrics.jsonl                                    train loss per step, eval loss per eval
    loss.png                                         train + eval curves
    summary.json                                     base model, data, steps, losses, speed
    checkpoints/checkpoint-N                         best and last checkpoints (resumable)
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.io import InputError, atomic_write_json, iter_jsonl, write_jsonl
from core.models.loading import ADAPTER_SUMMARY
from finetune.report import (
    METRICS,
    build_summary,
    metrics_callback,
    plot_losses,
    write_readme,
)

if TYPE_CHECKING:
    from compara.config import ExperimentConfig

log = logging.getLogger(__name__)
TRAIN_RECORDS = "train_records.jsonl"

CHECKPOINTS = "checkpoints"
SUMMARY = ADAPTER_SUMMARY  # the folder is an adapter: core.models reads it back
RUN_STATE = "run.json"  # written at the start: what a --resume must match


class RunConflict(InputError):
    """The output folder holds another run (or a finished one) and --resume does not fit."""


@dataclass
class Prepared:
    """Everything a run needs, built before training starts (also used by the benchmark)."""

    loaded: Any  # core.models.Loaded, model already wrapped by PEFT
    template: Any
    train: Any  # ExampleDataset
    val: Any
    train_records: list[dict]
    report: Any  # DataReport


def load_template(cfg: ExperimentConfig, data: Path):
    """The template ingest used: the copy in the data folder, else the configured one."""
    from core.prompts import TEMPLATE_FILENAME, PromptTemplate

    folder = data if data.is_dir() else data.parent
    if (folder / TEMPLATE_FILENAME).is_file():
        return PromptTemplate.from_dir(folder)
    return PromptTemplate.load(cfg.ingest.instructions.template)


def choose_training_records(cfg: ExperimentConfig, records: list[dict], report) -> list[dict]:
    """The records trained on: ``finetune.select`` within ``max_train_records``, then the
    reading share built from the index (both recorded in the data report)."""
    from finetune.data import select_records

    ft = cfg.finetune
    if ft.select == "tasks" and not ft.reading and not ft.max_train_tokens:
        return records
    # A token budget keeps a prefix of the order: by fact coverage, never the file's order.
    mode = "facts" if ft.select == "tasks" and ft.max_train_tokens else ft.select
    limit = ft.max_train_records
    n_reading = round(ft.reading * (limit or len(records)))
    references: list[list[str]] = []
    if ft.select == "questions":
        from core.questions import load_questions, stratified_sample

        if not cfg.paths.questions:
            raise InputError("finetune.select=questions needs paths.questions")
        questions = list(load_questions(Path(cfg.paths.questions), cfg.eval.max_question_chars,
                                        cfg.eval.long_questions))
        if ft.select_questions:
            questions = stratified_sample(questions, ft.select_questions, cfg.seed)
        references = [q.reference for q in questions if q.reference]
    budget = None if limit is None else max(1, limit - n_reading)
    chosen, selection = select_records(records, budget, mode, references,
                                       cfg.eval.keep_accents)
    report.selection = selection
    if n_reading:
        from finetune.reading import build_reading_records, load_index_bm25, load_index_chunks

        if not cfg.paths.index:
            raise InputError("finetune.reading needs the index (paths.index): run `compara index`")
        chunks = load_index_chunks(cfg.paths.index)  # verified before anything is read
        reading, report.reading = build_reading_records(
            chosen, chunks, count=n_reading, k=ft.reading_k or cfg.retrieval.k,
            no_gold_share=ft.reading_no_gold, seed=ft.seed, bm25=load_index_bm25(cfg.paths.index),
            ordered=ft.select != "tasks")  # by fact coverage: the asked facts read first
        log.info("reading tasks: %d records (%d with the gold passage) from %s",
                 len(reading), report.reading["with_gold"], cfg.paths.index)
        chosen = chosen + reading
    report.used["train"] = len(chosen)
    return chosen


def _fit_token_budget(budget: int, records: list[dict], train, report):
    """Keep the records (in selection order) that fit ``finetune.max_train_tokens``."""
    from finetune.data import IGNORE, ExampleDataset, fit_token_budget

    kept, budget_report = fit_token_budget(records, train.examples, budget)
    if not kept:
        raise InputError(f"finetune.max_train_tokens={budget}: no training record fits (the "
                         f"shortest has {min(train.lengths)} tokens); raise the budget")
    examples = [train.examples[i] for i in kept]
    report.selection["token_budget"] = budget_report
    report.used["train"] = len(kept)
    report.tokens["train"] = sum(len(e.input_ids) for e in examples)
    report.response_tokens["train"] = sum(sum(t != IGNORE for t in e.labels) for e in examples)
    log.info("finetune.max_train_tokens=%d: kept %d of %d records (%d of %d tokens)", budget,
             len(kept), len(records), budget_report["tokens_kept"], budget_report["tokens_before"])
    return [records[i] for i in kept], ExampleDataset(examples)


class OverBudget(InputError):
    """The planned training time exceeds finetune.max_hours (and --force was not given)."""


def check_time_budget(cfg: ExperimentConfig, train, *, force: bool = False,
                      world_size: int = 1, model=None, dry: bool = False) -> dict[str, Any]:
    """The plan of this run's training (tokens, rate and its source, hours) from its tokenized
    training set ``train``; refuses a run over ``finetune.max_hours`` unless ``force``.

    Called before the base model is loaded: with a sourced rate (finetune.rate) a run over
    budget is refused then. Where no rate is sourced the budget needs one measured here, so
    with ``model`` None the plan comes back with ``rate.value`` None (``pending``), to be made
    again once the model is loaded and wrapped (:func:`finetune.rate.probe_train_rate`)."""
    from core.models.loading import cpu_has_native_bf16, resolve_device
    from finetune.rate import finetune_rate, probe_train_rate, train_tokens_of_run

    ft = cfg.finetune
    device = resolve_device(cfg.model.device)
    kind = "cuda" if device.startswith("cuda") else device
    tokens = train_tokens_of_run(ft, train.lengths, world_size)
    rate = finetune_rate(cfg.model, kind,
                         bf16_native=cpu_has_native_bf16() if kind == "cpu" else True)
    if rate.value is None and ft.max_hours is not None and model is not None:
        rate = probe_train_rate(model, train.examples, ft)
    hours = tokens / rate.value / 3600 if rate.value else None
    plan = {"train_tokens": tokens, "rate": rate.to_dict(), "hours": hours,
            "max_hours": ft.max_hours, "forced": False, "world_size": world_size,
            "pending": hours is None and ft.max_hours is not None and model is None}
    plan["over_budget"] = bool(ft.max_hours is not None and hours is not None
                               and hours > ft.max_hours)
    if dry:  # a dry run reports the plan, it refuses nothing
        return plan
    if plan["over_budget"]:
        what = (f"this run would train on {tokens:,} tokens at {rate.value:,.1f} train "
                f"tokens/s ({rate.source}): about {_hours(hours)}, over the budget "
                f"finetune.max_hours={ft.max_hours:g}")
        if not force:
            raise OverBudget(
                f"{what}. To proceed: cap the data with -s finetune.max_train_tokens=N (about "
                f"{int(sum(train.lengths) * ft.max_hours / hours):,} fits), fewer "
                "epochs or max_steps, raise finetune.max_hours, or pass --force (`compara plan` "
                "shows the whole plan)")
        log.warning("%s; --force: training anyway", what)
        plan["forced"] = True
    elif hours is not None:
        log.info("Plan: %s train tokens at %.1f tokens/s (%s): about %s", f"{tokens:,}",
                 rate.value, rate.source, _hours(hours))
    return plan


def _hours(hours: float) -> str:
    if hours >= 48:
        return f"{hours / 24:.1f} days"
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"


def lora_config(ft):
    from peft import LoraConfig

    targets = ft.target_modules
    return LoraConfig(
        r=ft.lora_r, lora_alpha=ft.lora_alpha, lora_dropout=ft.lora_dropout, bias="none",
        task_type="CAUSAL_LM",
        target_modules="all-linear" if targets == ["all-linear"] else list(targets))


@dataclass
class TrainingData:
    """The records and tokenized examples of a run, made with the tokenizer alone."""

    template: Any
    train: Any  # ExampleDataset
    val: Any
    train_records: list[dict]
    report: Any  # DataReport


def counting_tokenizer(model_cfg, local_only: bool = False):
    """The base model's tokenizer as :func:`core.models.load_base` prepares it (BOS where the
    family needs it, no EOS closing a prompt), read without the model's weights: the run's
    data is tokenized, and its budget checked, before gigabytes of weights are loaded."""
    from types import SimpleNamespace

    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from core.models.loading import BOS_FAMILIES, prepare_tokenizer, source_path
    from core.models.registry import ModelNotFound, resolve

    source = resolve(model_cfg.base, model_cfg.revision)
    path = source_path(source)
    try:
        kwargs = {"revision": model_cfg.revision, "local_files_only": local_only}
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        config = AutoConfig.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise ModelNotFound(f"could not load the tokenizer of {model_cfg.base!r} from {path}: "
                            f"{exc}") from None
    needs_bos = source.needs_bos
    if needs_bos is None:
        needs_bos = config.model_type.startswith(BOS_FAMILIES)
    weightless = SimpleNamespace(config=config, generation_config=GenerationConfig(),
                                 resize_token_embeddings=lambda *args, **kwargs: None)
    prepare_tokenizer(tokenizer, weightless, needs_bos=needs_bos)
    return tokenizer


def prepare_data(cfg: ExperimentConfig, data: str | Path, tokenizer) -> TrainingData:
    """Read the splits, choose the training records, tokenize both splits and apply
    ``finetune.max_train_tokens``: what the run trains on, as `compara plan` counts it too."""
    from finetune.data import ExampleDataset, encode_all, load_splits

    ft = cfg.finetune
    data = Path(data)
    train_records, val_records, report = load_splits(
        data, val_fraction=ft.val_fraction, tasks=ft.tasks, max_train=ft.max_train_records,
        max_val=ft.max_val_records, select=ft.select)
    train_records = choose_training_records(cfg, train_records, report)
    template = load_template(cfg, data)
    train = ExampleDataset(encode_all(tokenizer, template, train_records, ft.max_length, "train",
                                      report))
    if ft.max_train_tokens:
        train_records, train = _fit_token_budget(ft.max_train_tokens, train_records, train, report)
    val = ExampleDataset(encode_all(tokenizer, template, val_records, ft.max_length, "val", report))
    return TrainingData(template, train, val, train_records, report)


def wrap_for_training(cfg: ExperimentConfig, loaded):
    """The loaded base with a fresh LoRA adapter, as training uses it (returns the model)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    from finetune.attention import use_packed_attention

    ft = cfg.finetune
    model = loaded.model
    model.config.use_cache = False
    if cfg.model.quantize != "none" and ft.kbit_upcast:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=ft.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    import torch

    if ft.packing:  # a packed row's attention example by example (sdpa models)
        use_packed_attention(model)
    torch.manual_seed(ft.seed)
    model = get_peft_model(model, lora_config(ft))
    lora_dtype = ft.lora_dtype
    if lora_dtype == "auto":
        lora_dtype = loaded.info.dtype if cfg.model.quantize != "none" else "float32"
    if lora_dtype == "bfloat16" and loaded.info.device == "cpu" and not loaded.info.bf16_native:
        log.warning("finetune.lora_dtype=bfloat16, but this CPU has no native bf16: LoRA weights "
                    "in float32 (emulated bf16 is ~200x slower)")
        lora_dtype = "float32"
    if lora_dtype != "float32":  # peft creates them in float32
        for param in model.parameters():
            if param.requires_grad:
                param.data = param.data.to(getattr(torch, lora_dtype))
    if ft.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def _same_tokens(a, b, template, records: list[dict]) -> bool:
    """Whether two tokenizers give the same ids on a record's prompt and response."""
    if not records:
        return True
    prompt, response = template.render_record(records[0])
    return all(a(text)["input_ids"] == b(text)["input_ids"] for text in (prompt, response))


def load_for_training(cfg: ExperimentConfig, tokenized: TrainingData, tokenizer=None,
                      data: str | Path | None = None) -> Prepared:
    """Load the base, wrap it with a fresh LoRA adapter; the data tokenized by ``tokenizer``
    is kept when the loaded tokenizer encodes the same way (it is the same files), else
    ``data`` (default: ``paths.data``) is tokenized again."""
    from core.models import load_base

    loaded = load_base(cfg.model)
    if tokenizer is not None and not _same_tokens(tokenizer, loaded.tokenizer, tokenized.template,
                                                  tokenized.train_records):
        log.warning("the loaded tokenizer encodes differently: tokenizing again")
        tokenized = prepare_data(cfg, data or cfg.paths.data, loaded.tokenizer)
    loaded.model = wrap_for_training(cfg, loaded)
    return Prepared(loaded, tokenized.template, tokenized.train, tokenized.val,
                    tokenized.train_records, tokenized.report)


def prepare(cfg: ExperimentConfig, data: str | Path) -> Prepared:
    """Read and tokenize the data, load the base, wrap it with a fresh LoRA adapter."""
    tokenizer = counting_tokenizer(cfg.model)
    tokenized = prepare_data(cfg, data, tokenizer)
    return load_for_training(cfg, tokenized, tokenizer, data)


def _trainer_class():
    from transformers import Trainer

    from finetune.loss import fusable_head, response_loss

    class ResponseTrainer(Trainer):
        """Trainer whose loss covers the response tokens only (see finetune.loss)."""

        loss_is_scaled_for_ga = True  # divided by the accumulated batch's response tokens

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # Always count the response tokens of the accumulated batch (our loss divides by it).
            self.model_accepts_loss_kwargs = True
            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            # FSDP shards the head's weight: the fused loss needs it whole, so the plain path.
            self._head = None if self.is_fsdp_enabled else fusable_head(base)
            self._head_config = base.config

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, _ = response_loss(model, inputs, self._head, self._head_config,
                                    num_items=num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # DDP averages the gradients
            return (loss, {"loss": loss}) if return_outputs else loss

    return ResponseTrainer


def training_arguments(cfg: ExperimentConfig, out: Path, device: str):
    from transformers import TrainingArguments

    ft = cfg.finetune
    cuda = device.startswith("cuda")
    dtype = cfg.model.dtype
    return TrainingArguments(
        output_dir=str(out / CHECKPOINTS),
        per_device_train_batch_size=ft.batch_size,
        per_device_eval_batch_size=ft.eval_batch_size or ft.batch_size,
        gradient_accumulation_steps=ft.grad_accum,
        learning_rate=ft.lr, lr_scheduler_type=ft.lr_scheduler, warmup_steps=ft.warmup_ratio,
        weight_decay=ft.weight_decay, optim=ft.optimizer, max_grad_norm=ft.max_grad_norm,
        num_train_epochs=ft.epochs, max_steps=ft.max_steps or -1,
        logging_strategy="steps", logging_steps=ft.logging_steps,
        eval_strategy="steps", eval_steps=ft.eval_steps,
        save_strategy="steps", save_steps=ft.eval_steps, save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
        prediction_loss_only=True,
        # Autocast on GPU (LoRA weights stay fp32, the optimizer's master copy).
        bf16=cuda and dtype in ("auto", "bfloat16") and _cuda_bf16(),
        fp16=cuda and (dtype == "float16" or (dtype == "auto" and not _cuda_bf16())),
        use_cpu=device == "cpu",
        activation_checkpointing=ft.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        train_sampling_strategy=("group_by_length" if ft.group_by_length and not ft.packing
                                 else "random"),
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False, label_names=["labels"],
        seed=ft.seed, data_seed=ft.seed,
        report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )


def _cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _last_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / CHECKPOINTS).glob("checkpoint-*"),
                   key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit()
                   else -1)
    ckpts = [c for c in ckpts if (c / "trainer_state.json").is_file()]
    return ckpts[-1] if ckpts else None


def _run_identity(prepared: Prepared, cfg: ExperimentConfig) -> dict[str, Any]:
    return {"base": prepared.loaded.info.fingerprint, "data": prepared.report.sha256,
            "used": prepared.report.used, "template": prepared.template.fingerprint,
            "quantize": cfg.model.quantize, "max_length": cfg.finetune.max_length,
            "lora": {"r": cfg.finetune.lora_r, "alpha": cfg.finetune.lora_alpha,
                     "targets": cfg.finetune.target_modules}}


def check_output_folder(out: Path, resume: bool) -> Path | None:
    """Refuse to mix runs; return the checkpoint to resume from (None: start afresh)."""
    has_run = (out / RUN_STATE).is_file() or (out / CHECKPOINTS).is_dir()
    if not resume:
        if has_run or (out / SUMMARY).is_file():
            raise RunConflict(f"{out} already holds a fine-tuning run: pass --resume to continue "
                              "it, or choose another --out (or delete the folder)")
        return None
    if not has_run:
        log.info("--resume: nothing to resume in %s, starting a new run", out)
        return None
    ckpt = _last_checkpoint(out)
    if ckpt is None:
        log.info("--resume: no checkpoint saved yet in %s, starting over", out)
    return ckpt


def _trim_metrics(path: Path, step: int) -> None:
    """Drop metrics logged after the checkpoint we resume from: they are redone."""
    if not path.is_file():
        return
    keep = [rec for _, rec in iter_jsonl(path, on_error=lambda bad: None)
            if rec.get("step", 0) <= step]
    from core.io import write_jsonl

    write_jsonl(path, keep)


def run_finetune(cfg: ExperimentConfig, data: str | Path, out: str | Path, *,
                 resume: bool = False, callbacks: list | None = None,
                 force: bool = False) -> dict[str, Any]:
    """Train an adapter on ``data`` into ``out``; returns the summary (also in summary.json).

    Before anything is written, the run's training time is planned and a run over
    ``finetune.max_hours`` is refused (:class:`OverBudget`) unless ``force``."""
    from transformers import set_seed

    from core.configbase import dump_yaml

    started = time.monotonic()
    out = Path(out)
    data = Path(data)
    # The config written with the adapter says what was actually used.
    cfg = cfg.replace(paths=cfg.paths.replace(data=str(data.resolve()), adapter=str(out.resolve())))
    resume_from = check_output_folder(out, resume)
    if resume and (out / SUMMARY).is_file() and resume_from is not None:
        summary = json.loads((out / SUMMARY).read_text(encoding="utf-8"))
        state = json.loads((resume_from / "trainer_state.json").read_text(encoding="utf-8"))
        if state.get("global_step") == summary.get("steps"):
            from finetune.data import load_splits

            ft = cfg.finetune
            *_, report = load_splits(data, val_fraction=ft.val_fraction, tasks=ft.tasks,
                                     max_train=ft.max_train_records, max_val=ft.max_val_records)
            if report.sha256 != summary["data"]["sha256"]:
                raise RunConflict(f"{out}: cannot resume, the run was trained on other data; "
                                  "choose another --out")
            log.info("%s: the run is already complete (%d steps)", out, summary["steps"])
            return summary
    set_seed(cfg.finetune.seed)
    # The data is tokenized and the budget checked before the model's weights are loaded.
    tokenizer = counting_tokenizer(cfg.model)
    tokenized = prepare_data(cfg, data, tokenizer)
    world_size = _world_size()
    plan = check_time_budget(cfg, tokenized.train, force=force, world_size=world_size)
    prepared = load_for_training(cfg, tokenized, tokenizer, data)
    if plan.pop("pending"):  # no sourced rate: measured on the loaded model, then checked
        plan = check_time_budget(cfg, prepared.train, force=force, world_size=world_size,
                                 model=prepared.loaded.model)
        plan.pop("pending")
    loaded = prepared.loaded
    out.mkdir(parents=True, exist_ok=True)
    # what the adapter is trained on: fact exposure in `compara batch` is counted on it
    write_jsonl(out / TRAIN_RECORDS, prepared.train_records)
    identity = _run_identity(prepared, cfg)
    if resume_from is not None:
        before = json.loads((out / RUN_STATE).read_text(encoding="utf-8"))
        changed = [k for k in identity if before.get(k) != identity[k]]
        if changed:
            raise RunConflict(f"{out}: cannot resume, the run was started with other "
                              f"{', '.join(changed)}; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    trainer_cls = _trainer_class()
    metrics_cb = metrics_callback(out)
    from finetune.data import PackedCollator, PaddedCollator

    ft = cfg.finetune
    collator = PackedCollator() if ft.packing else PaddedCollator(loaded.tokenizer.pad_token_id)
    args = training_arguments(cfg, out, loaded.info.device)
    trainer = trainer_cls(
        model=loaded.model, args=args, train_dataset=prepared.train, eval_dataset=prepared.val,
        data_collator=collator, processing_class=loaded.tokenizer,
        callbacks=[metrics_cb, *(callbacks or [])])
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # our callback logs and draws the progress bar
    main = trainer.is_world_process_zero()
    if main:
        dump_yaml(cfg.to_dict(), out / "config.yaml")
        prepared.template.save(out)
        loaded.tokenizer.save_pretrained(out)
        atomic_write_json(out / RUN_STATE, identity)
    _log_start(cfg, prepared, trainer)
    resumed_step = 0
    if resume_from is None:
        if main and (out / METRICS).exists():
            (out / METRICS).unlink()
        trainer.evaluate()  # the eval loss before any training: step 0 of the curve
    else:
        resumed_step = int(json.loads((resume_from / "trainer_state.json").read_text())
                           ["global_step"])
        if main:
            _trim_metrics(out / METRICS, resumed_step)
        log.info("Resuming from %s (step %d)", resume_from, resumed_step)
    train_start = time.monotonic()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_seconds = time.monotonic() - train_start
    state = trainer.state
    best = state.best_model_checkpoint
    last = _last_checkpoint(out)
    chosen = Path(best) if (ft.keep == "best" and best) else last
    if chosen is not None and chosen != (Path(best) if best else None):
        _load_adapter_weights(trainer.model, chosen)
    stop = None
    stop_seconds = 0.0
    fsdp = trainer.is_fsdp_enabled
    if fsdp:
        # The adapter is sharded: gathering it is collective, every process takes part (PEFT's
        # FSDP guide); the main process writes it.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        trainer.save_model(str(out))
    if main:
        if not fsdp:
            trainer.model.save_pretrained(out)
        if ft.stop_check and fsdp:
            # generating on one process of a sharded model would wait for the others forever
            log.info("finetune.stop_check skipped under FSDP: run `compara ask` with the adapter")
        elif ft.stop_check:
            from finetune.evaluate import stop_check

            t0 = time.monotonic()
            stop = stop_check(trainer.model, loaded.tokenizer, prepared.template, prepared.train_records,
                              n=ft.stop_check, max_new_tokens=ft.stop_check_max_new_tokens)
            stop_seconds = time.monotonic() - t0
    summary = build_summary(cfg, prepared, trainer, data, out, state, result, train_seconds,
                       time.monotonic() - started, resumed_step, best, last, chosen,
                       metrics_cb, stop)
    summary["plan"] = plan
    summary["timing"] = _timing(out, loaded.info.load_seconds, train_seconds, stop_seconds,
                                summary["elapsed_seconds"], resumed_step)
    if main:

        plot_losses(out / METRICS, out / "loss.png", title=f"{cfg.model.base} — {out.name}")
        atomic_write_json(out / SUMMARY, summary)
        write_readme(out, summary)
    return summary


def dry_run(cfg: ExperimentConfig, data: str | Path, launch: str | Path | None = None,
            ) -> dict[str, Any]:
    """Everything a run does before its first step, nothing after: the data tokenized, the
    plan (train tokens, rate, hours, budget), and the model wrapper built as training would
    build it (under ``launch``'s accelerate environment: FSDP stores the 4-bit weights in bf16
    and turns the fused head off). Writes nothing and trains nothing."""
    import os
    from unittest import mock

    from core.models.loading import under_fsdp
    from finetune.gpus import launch_environment
    from finetune.loss import fusable_head

    env = launch_environment(launch) if launch else {}
    world_size = int(env.get("WORLD_SIZE", _world_size()))
    tokenizer = counting_tokenizer(cfg.model)
    tokenized = prepare_data(cfg, data, tokenizer)
    plan = check_time_budget(cfg, tokenized.train, world_size=world_size, dry=True)
    with mock.patch.dict(os.environ, {k: v for k, v in env.items() if k != "WORLD_SIZE"}):
        prepared = load_for_training(cfg, tokenized, tokenizer, data)
        fsdp = under_fsdp()  # the rule load_base followed
    plan.pop("pending")
    model = prepared.loaded.model
    trainable, total = model.get_nb_trainable_parameters()
    storage = sorted({str(p.dtype).replace("torch.", "") for n, p in model.named_parameters()
                      if type(p).__name__ == "Params4bit"})
    lora = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()
                   if p.requires_grad})
    ft = cfg.finetune
    # as ResponseTrainer chooses: FSDP shards the head's weight, the fused loss needs it whole
    fused = not fsdp and fusable_head(model.get_base_model()) is not None
    return {"base": prepared.loaded.info.to_dict(), "launch": str(launch) if launch else None,
            "distributed": "FSDP" if fsdp else env.get("ACCELERATE_DISTRIBUTED_TYPE",
                                                        "MULTI_GPU" if world_size > 1 else "NO"),
            "world_size": world_size,
            "examples_per_step": ft.batch_size * ft.grad_accum * world_size,
            "train_records": len(tokenized.train), "val_records": len(tokenized.val),
            "plan": plan, "trainable_parameters": trainable, "parameters": total,
            "quant_storage": storage, "lora_dtype": lora, "fused_head": fused}


def _world_size() -> int:
    import os

    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def _timing(out: Path, load: float, train_seconds: float, stop_seconds: float, elapsed: float,
            resumed_step: int) -> dict[str, float]:
    """Where the tune's time went: loading, training steps, evaluations, the stop check."""
    evals = [rec for _, rec in iter_jsonl(out / METRICS, on_error=lambda bad: None)
             if rec.get("kind") == "eval" and rec.get("seconds") is not None
             and rec.get("step", 0) >= resumed_step] if (out / METRICS).is_file() else []
    in_training = sum(r["seconds"] for r in evals if r.get("step", 0) > resumed_step)
    return {"load": round(load, 1), "train_steps": round(max(train_seconds - in_training, 0), 1),
            "evals": round(sum(r["seconds"] for r in evals), 1),
            "stop_check": round(stop_seconds, 1), "total": round(elapsed, 1)}


def _load_adapter_weights(model, checkpoint: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(checkpoint / "adapter_model.safetensors")))


def _log_start(cfg: ExperimentConfig, prepared: Prepared, trainer) -> None:
    ft = cfg.finetune
    info = prepared.loaded.info
    trainable, total = prepared.loaded.model.get_nb_trainable_parameters()
    r = prepared.report
    steps = trainer.args.max_steps if trainer.args.max_steps > 0 else math.ceil(
        len(prepared.train) / (ft.batch_size * ft.grad_accum * trainer.args.world_size)
        * ft.epochs)
    log.info("Base %s (%s, %s, %s); LoRA r=%d alpha=%d on %s: %s trainable of %s parameters",
             info.base, info.device, info.dtype, info.quantize, ft.lora_r, ft.lora_alpha,
             ",".join(ft.target_modules), f"{trainable:,}", f"{total:,}")
    log.info("Data: %d train / %d val examples, %d / %d tokens (%d train response tokens); "
             "%d steps of %d x %d examples", r.used["train"], r.used["val"], r.tokens["train"],
             r.tokens["val"], r.response_tokens["train"], steps, ft.batch_size, ft.grad_accum)
