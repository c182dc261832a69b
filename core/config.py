"""The settings of core's models and generation: the base model and the decoding, shared by
every arm and by training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from core.configbase import ConfigBase, ConfigError, opt


@dataclass
class ModelConfig(ConfigBase):
    """The base model every arm shares: one copy, one quantisation, for training and all arms."""

    base: str = opt("gemma3-270m", "Registry name (`compara models`), local Hugging Face folder, "
                                   "or hub id.")
    revision: str | None = opt(None, "Hub revision (branch, tag or commit) of a hub id.")
    quantize: Literal["4bit", "8bit", "none"] = opt(
        "4bit", "Weights: 4bit (NF4, double quantisation, QLoRA), 8bit, or none (dtype).")
    device: str = opt("auto", "auto (CUDA if present, else CPU), cpu, cuda, cuda:N, mps.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = opt(
        "auto", "Compute dtype: auto = bf16 where the GPU/CPU supports it, else fp16 (GPU) or "
                "fp32.")
    unpack_4bit_on_cpu: bool = opt(
        True, "Answering on a CPU (ask, batch, app, demo): 4-bit weights are unpacked once into "
              "the compute dtype, the same NF4 values without unpacking them again at every "
              "step (2-3x faster answers), when that fits in a quarter of the free memory. "
              "Fine-tuning keeps them packed (QLoRA).")
    fp16_head_on_cpu: bool = opt(
        True, "Answering on a CPU in fp32: the output head's product by fbgemm's fp16-weight "
              "kernel, 3-4x faster at a decoding step, when every head weight is an fp16 value "
              "(checkpoints stored in bf16/fp16, the bundled models): the same weights, sums "
              "in another order. Fine-tuning keeps the plain head.")
    attn_implementation: str = opt("auto", "Attention kernel: auto, sdpa, eager, "
                                           "flash_attention_2.")

    def validate(self) -> None:
        import re

        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ConfigError(f"model.device: {self.device!r} is not auto, cpu, cuda, cuda:N or mps")


@dataclass
class GenerationConfig(ConfigBase):
    """Decoding settings, set once and identical for every arm of the comparison."""

    max_new_tokens: int = opt(96, "Tokens generated at most per answer (an answer also ends on "
                                  "EOS or at a stop string).")
    stop_strings: list[str] | None = opt(
        None, "An answer ends where one of these is generated (it is cut off the answer), the "
              "same for every arm. None: the template's section markers (`\\n###`); [] turns "
              "stop strings off, the line break included (answers end on EOS or at "
              "max_new_tokens only).")
    stop_at_line_break: bool = opt(
        True, "An answer also ends at its first line break after some text, for every arm: "
              "every answer the instruction set teaches is one line (ingest writes no line "
              "break in an output), and a base model that goes on past its answer begins a new "
              "line (a new passage, the next section). false for multi-line answers.")
    do_sample: bool = opt(False, "Sample instead of greedy decoding (greedy is the default).")
    temperature: float = opt(0.7, "Sampling temperature (with do_sample).")
    top_p: float = opt(0.9, "Nucleus sampling mass (with do_sample).")
    top_k: int = opt(50, "Sample among the k most likely tokens (with do_sample).")
    repetition_penalty: float = opt(1.0, "1.0 = none. Applied to every arm alike.")
    seed: int = opt(0, "Seed of sampling (answers are reproducible).")
    max_prompt_tokens: int = opt(
        1536, "Longer prompts are cut to fit, with a warning: retrieved passages are trimmed "
              "first, then the question.")
    batch_size: int = opt(4, "Prompts generated together (left padding); 1 = one at a time.")
    prefill_tokens: int = opt(
        2048, "Prompts joining a batch are read (prefilled) in groups of at most this many "
              "tokens, rows x the longest prompt, one prompt at least: on a CPU one pass over "
              "12 RAG prompts of ~1,100 tokens is 1.4-1.8x slower than passes over one or "
              "two (the activations no longer fit the caches; BENCHMARKS.md). Changes speed; the "
              "answers only by rounding in bf16, as a batch size does. 0 = all joining "
              "prompts in one pass.")
    threads: int | None = opt(None, "CPU threads for torch (None: torch's default).")

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError("generation.max_new_tokens must be >= 1")
        if self.temperature <= 0:
            raise ConfigError("generation.temperature must be > 0")
        if not 0 < self.top_p <= 1:
            raise ConfigError("generation.top_p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ConfigError("generation.repetition_penalty must be > 0")
        if self.max_prompt_tokens < 32:
            raise ConfigError("generation.max_prompt_tokens must be >= 32")
        if self.batch_size < 1:
            raise ConfigError("generation.batch_size must be >= 1")
        if self.prefill_tokens < 0:
            raise ConfigError("generation.prefill_tokens must be >= 0 (0 = no limit)")
        if self.stop_strings is not None and any(not s for s in self.stop_strings):
            raise ConfigError("generation.stop_strings: an empty string would stop every answer "
                              "at once; use [] to turn stop strings off")

    def identity(self, stop_strings: list[str] | None = None) -> dict[str, Any]:
        """The settings that change what is generated (not how fast); ``stop_strings``: the
        resolved ones (see :meth:`resolved_stop_strings`), which every cache key includes."""
        keys = ["max_new_tokens", "do_sample", "repetition_penalty", "max_prompt_tokens"]
        if self.do_sample:
            keys += ["temperature", "top_p", "top_k", "seed"]
        ident = {k: getattr(self, k) for k in keys}
        stops = self.stop_strings if stop_strings is None else stop_strings
        if stops:  # absent when off, so the identity of a run without them is unchanged
            ident["stop_strings"] = list(stops)
        return ident

    def resolved_stop_strings(self, template: Any) -> list[str]:
        """The stop strings in force: the configured ones, else the template's markers, and
        a line break (:attr:`stop_at_line_break`); none at all for ``stop_strings: []``."""
        if self.stop_strings == []:
            return []
        stops = list(self.stop_strings if self.stop_strings is not None else template.stop_markers)
        if self.stop_at_line_break and "\n" not in stops:
            stops.append("\n")
        return stops
