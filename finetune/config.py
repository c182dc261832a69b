"""Settings of `compara finetune` (the model itself is the experiment's ``model:`` section)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.configbase import ConfigBase, ConfigError, opt


@dataclass
class FinetuneConfig(ConfigBase):
    """QLoRA / LoRA training of an adapter on the instruction set."""

    # -- LoRA
    lora_r: int = opt(16, "LoRA rank.")
    lora_alpha: int = opt(32, "LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = opt(0.05, "Dropout on the LoRA path.")
    target_modules: list[str] = opt(
        ["all-linear"], "Modules that get LoRA: 'all-linear' (every linear projection of the "
                        "architecture but the output head) or names such as q_proj, v_proj.")
    lora_dtype: Literal["auto", "float32", "bfloat16"] = opt(
        "auto", "Dtype of the LoRA weights: auto = the compute dtype (bf16) on a quantised base, "
                "as in the QLoRA paper (half the activation memory of the LoRA path), else "
                "float32.")
    # -- optimisation
    lr: float = opt(2e-4, "Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = opt(
        "cosine", "Learning-rate schedule after warm-up.")
    warmup_ratio: float = opt(0.03, "Share of the steps spent warming the learning rate up.")
    weight_decay: float = opt(0.0, "AdamW weight decay on the LoRA weights.")
    optimizer: str = opt("adamw_torch", "Optimizer (transformers name), e.g. adamw_torch, "
                                        "paged_adamw_8bit on GPU.")
    max_grad_norm: float = opt(1.0, "Gradient clipping (0 = off).")
    epochs: float = opt(1.0, "Passes over the training split (ignored when max_steps is set).")
    max_steps: int | None = opt(None, "Stop after this many optimizer steps.")
    batch_size: int = opt(4, "Examples per device per forward pass.")
    grad_accum: int = opt(1, "Batches accumulated per optimizer step.")
    max_length: int = opt(512, "Tokens per example (prompt + response + EOS). Longer examples are "
                               "cut (the prompt's middle first, then the response) and counted.")
    packing: bool = opt(
        True, "Padding-free batches: the examples of a batch are laid end to end in one row, "
              "each attending only to itself (no pad tokens computed).")
    group_by_length: bool = opt(True, "Without packing: batch examples of similar length.")
    gradient_checkpointing: bool = opt(
        False, "Recompute activations in the backward pass: less memory, ~30% more time.")
    kbit_upcast: bool = opt(
        False, "Upcast the layers that stay unquantised (embeddings, norms, head) to fp32 "
               "before QLoRA, as peft's prepare_model_for_kbit_training does. Costs memory and "
               "time (Gemma's 262k x 640 embedding); the norms already compute in fp32.")
    seed: int = opt(42, "Seed of data order and LoRA init.")
    # -- data
    val_fraction: float = opt(
        0.1, "With a single data file: share of records held out for eval loss (stable hash).")
    tasks: list[str] | None = opt(None, "Train only on these task types (default: all).")
    max_train_records: int | None = opt(
        None, "Use at most this many training records (a stable, task-balanced subset).")
    max_val_records: int | None = opt(None, "Evaluate on at most this many val records.")
    max_train_tokens: int | None = opt(
        None, "Train on records holding at most this many tokens (prompt + response, one pass "
              "over the training set; the run sees epochs x this). Records are kept in the order "
              "of finetune.select ('facts' when select is 'tasks': fact coverage, never file "
              "order) until the budget is spent; the summary says how many were kept. "
              "null = no budget.")
    max_hours: float | None = opt(
        None, "Refuse to start a run whose planned training time exceeds this many hours: "
              "checked from the tokenized data before the model's weights load (with a sourced "
              "rate; else after a short probe of the loaded model), before anything is written "
              "(`compara plan` shows the estimate and the source of its rate; --force runs it "
              "anyway). null = no limit.")
    select: Literal["tasks", "facts", "questions"] = opt(
        "tasks", "Which records fill max_train_records: 'tasks' (task types in turn), 'facts' "
                 "(facts in turn, each with all its phrasings), 'questions' (first the facts "
                 "that answer the questions of paths.questions, each question in turn, then "
                 "'facts'). The records trained on are written to the adapter folder "
                 "(train_records.jsonl) and fact exposure is measured on them.")
    select_questions: int | None = opt(
        None, "With select=questions: only the N questions `compara batch --sample N` asks "
              "(the same stratified choice; the demo's demo.questions), or all (null).")
    reading: float = opt(
        0.0, "Share of the training records that are reading tasks: the RAG prompt filled with "
             "the passage holding the answer among distractors from the index (or without it, "
             "answered with the abstention sentence), answer citing [n]. Needs the index "
             "(paths.index). 0 = off.")
    reading_k: int | None = opt(None, "Passages in a reading record (default: retrieval.k).")
    reading_no_gold: float = opt(
        0.2, "Share of reading records without the gold passage (answered with the abstention "
             "sentence of the RAG template).")
    # -- evaluation, checkpoints, output
    eval_steps: int = opt(50, "Eval loss on the val split every this many steps (and at the "
                              "start and the end); a checkpoint is saved at each eval.")
    eval_batch_size: int | None = opt(None, "Examples per eval batch (default: batch_size).")
    logging_steps: int = opt(1, "Training loss written to metrics.jsonl every this many steps.")
    keep: Literal["best", "last"] = opt(
        "best", "Adapter left in the output folder: the one with the lowest eval loss, or the "
                "last. Both checkpoints are kept under checkpoints/.")
    stop_check: int = opt(
        24, "After training, greedy answers to this many training prompts, with the adapter "
            "and without: how often each stops on EOS (0 = skip).")
    stop_check_max_new_tokens: int = opt(96, "Token budget of each stop-check answer.")

    def validate(self) -> None:
        if self.lora_r < 1 or self.lora_alpha < 1:
            raise ConfigError("finetune.lora_r and finetune.lora_alpha must be >= 1")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError("finetune.lora_dropout must be in [0, 1)")
        if self.lr <= 0:
            raise ConfigError("finetune.lr must be > 0")
        if not self.target_modules:
            raise ConfigError("finetune.target_modules must name at least one module")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("finetune.max_steps must be >= 1")
        if self.max_steps is None and self.epochs <= 0:
            raise ConfigError("finetune.epochs must be > 0")
        for name in ("batch_size", "grad_accum", "eval_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"finetune.{name} must be >= 1")
        if self.max_length < 16:
            raise ConfigError("finetune.max_length must be >= 16")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError("finetune.warmup_ratio must be in [0, 1)")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError("finetune.val_fraction must be in (0, 1)")
        if not 0.0 <= self.reading < 1.0 or not 0.0 <= self.reading_no_gold <= 1.0:
            raise ConfigError("finetune.reading must be in [0, 1) and reading_no_gold in [0, 1]")
        if self.reading_k is not None and self.reading_k < 1:
            raise ConfigError("finetune.reading_k must be >= 1")
        if self.max_train_tokens is not None and self.max_train_tokens < 1:
            raise ConfigError("finetune.max_train_tokens must be >= 1 (or null)")
        if self.max_hours is not None and self.max_hours <= 0:
            raise ConfigError("finetune.max_hours must be > 0 (or null)")
        if self.stop_check < 0 or self.stop_check_max_new_tokens < 1:
            raise ConfigError("finetune.stop_check must be >= 0, stop_check_max_new_tokens >= 1")
