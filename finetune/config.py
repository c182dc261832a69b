"""Settings of `compara finetune`."""

from __future__ import annotations

from dataclasses import dataclass

from compara.configbase import ConfigBase, ConfigError, opt


@dataclass
class FinetuneConfig(ConfigBase):
    """QLoRA / LoRA training."""

    lora_r: int = opt(16, "LoRA rank.")
    lora_alpha: int = opt(32, "LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = opt(0.05, "Dropout on the LoRA path.")
    lr: float = opt(2e-4, "Peak learning rate.")
    epochs: float = opt(1.0, "Passes over the training split (ignored when max_steps is set).")
    max_steps: int | None = opt(None, "Stop after this many optimizer steps.")
    batch_size: int = opt(4, "Examples per device batch.")
    grad_accum: int = opt(1, "Batches accumulated per optimizer step.")
    max_length: int = opt(512, "Tokens per example (prompt + response + EOS); longer ones are cut.")
    seed: int = opt(42, "Seed of data order and LoRA init.")

    def validate(self) -> None:
        if self.lora_r < 1:
            raise ConfigError("finetune.lora_r must be >= 1")
        if self.lr <= 0:
            raise ConfigError("finetune.lr must be > 0")
