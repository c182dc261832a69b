"""The experiment config: one YAML file holds every stage's settings.

``configs/sample.yaml`` is the shipped demo; ``configs/ci.yaml`` a tiny one for tests;
``configs/llama2-7b-gpu.yaml`` the real thing on a GPU. Relative paths in a config file are
resolved against the folder of that file. Load with :func:`load_config`, which also applies
``key=value`` overrides (``--set finetune.lr=1e-4``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from compara.app.config import AppConfig
from compara.configbase import ConfigBase, ConfigError, apply_overrides, load_yaml, opt
from compara.report import EvalConfig
from finetune.config import FinetuneConfig
from ingest.config import IngestConfig
from rag.config import IndexConfig, RetrievalConfig

PATH_FIELDS = ("dump", "data", "index", "adapter", "runs", "questions")


@dataclass
class PathsConfig(ConfigBase):
    """Inputs and outputs of the pipeline. Relative paths: relative to the config file."""

    dump: str | None = opt(None, "The ptwiki XML dump (.xml, .xml.bz2).")
    data: str | None = opt(None, "Ingest output folder (articles.jsonl, instructions.*.jsonl).")
    index: str | None = opt(None, "FAISS index folder.")
    adapter: str | None = opt(None, "Fine-tuned adapter folder.")
    runs: str | None = opt(None, "Folder of batch runs.")
    questions: str | None = opt(None, "Default question file.")

    def resolved(self, base: Path) -> PathsConfig:
        values = {}
        for name in PATH_FIELDS:
            value = getattr(self, name)
            if value is not None:
                p = Path(value).expanduser()
                value = str(p if p.is_absolute() else (base / p).resolve())
            values[name] = value
        return PathsConfig(**values)


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


@dataclass
class DemoConfig(ConfigBase):
    """What `compara demo` runs after building everything."""

    questions: int = opt(24, "Questions of paths.questions put through every arm, spread evenly "
                             "over the question types (0 = all of them).")

    def validate(self) -> None:
        if self.questions < 0:
            raise ConfigError("demo.questions must be >= 0")


@dataclass
class ExperimentConfig(ConfigBase):
    """Everything one experiment needs, from the dump to the comparison."""

    name: str = opt("amostra", "Experiment name (used in output folder names and reports).")
    seed: int = opt(42, "Global seed.")
    paths: PathsConfig = opt(PathsConfig, "Inputs and outputs.")
    ingest: IngestConfig = opt(IngestConfig, "Dump reading, cleaning, instruction generation.")
    index: IndexConfig = opt(IndexConfig, "Chunking and embedding.")
    retrieval: RetrievalConfig = opt(RetrievalConfig, "Retrieval for the RAG arms.")
    model: ModelConfig = opt(ModelConfig, "The shared base model.")
    finetune: FinetuneConfig = opt(FinetuneConfig, "QLoRA training.")
    generation: GenerationConfig = opt(GenerationConfig, "Decoding, shared by all arms.")
    eval: EvalConfig = opt(EvalConfig, "Question files, metrics and reports.")
    demo: DemoConfig = opt(DemoConfig, "What `compara demo` runs.")
    app: AppConfig = opt(AppConfig, "The Streamlit app (`compara app`).")
    source: str | None = opt(None, "The YAML file this config was loaded from (set on load).")


def load_config(path: str | Path | None = None,
                overrides: list[str] | dict[str, Any] | None = None) -> ExperimentConfig:
    """Load an experiment YAML (default: the shipped sample), apply overrides, resolve paths."""
    from compara.paths import default_config_path, project_root

    if path is None:
        path = default_config_path()
        data = load_yaml(path) if Path(path).is_file() else {}
        base = Path(path).parent if Path(path).is_file() else project_root()
    else:
        data = load_yaml(path)
        base = Path(path).resolve().parent
    apply_overrides(data, overrides)
    data.pop("source", None)
    try:
        cfg = ExperimentConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    cfg.paths = cfg.paths.resolved(base)
    cfg.source = str(Path(path).resolve()) if Path(path).is_file() else None
    return cfg
