"""The experiment config: one YAML file holds every stage's settings.

``configs/sample.yaml`` is the shipped demo; ``configs/ci.yaml`` a tiny one for tests;
``configs/llama2-7b-gpu.yaml`` the real thing on a GPU. Relative paths in a config file are
resolved against the folder of that file. Load with :func:`load_config`, which also applies
``key=value`` overrides (``--set finetune.lr=1e-4``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from compara.app.config import AppConfig
from compara.arms import ArmConfig, default_arm_configs, resolve_arms
from core.config import GenerationConfig, ModelConfig
from core.configbase import ConfigBase, ConfigError, apply_overrides, load_yaml, opt
from core.exposure import DEFAULT_BIN_EDGES
from core.metrics import MEASURES
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
        from core.paths import under

        return PathsConfig(**{name: under(base, getattr(self, name)) for name in PATH_FIELDS})


@dataclass
class EvalConfig(ConfigBase):
    """Question files, metrics and reports of `compara batch` / `compara ask`."""

    bootstrap_resamples: int = opt(1000, "Bootstrap resamples for the 95% intervals (0: none).")
    confidence: float = opt(0.95, "Confidence level of the intervals.")
    seed: int = opt(0, "Seed of the bootstrap (intervals are reproducible).")
    keep_accents: bool = opt(False, "Compare answers with accents (default: ignore them).")
    exposure_count: Literal["outputs", "records"] = opt(
        "outputs", "Exposure used for the bins: training outputs containing the answer, or "
                   "records containing it anywhere (instruction, input or output).")
    exposure_bins: list[int] = opt(list(DEFAULT_BIN_EDGES),
                                   "Lower edges of the exposure bins (0, 1–2, 3–5, 6–10, 11+).")
    max_question_chars: int = opt(2000, "Longer questions are cut (or refused, see below).")
    long_questions: Literal["truncate", "refuse"] = opt(
        "truncate", "What to do with a question longer than max_question_chars.")
    measures: list[str] = opt(
        list(MEASURES),
        "Measures without a judge (docs/evaluation.md): likelihood (mean log-probability per "
        "token of the reference given the arm's prompt: one forward pass per batch), choice "
        "(the reference ranked against `distractors` other answers, same pass), similarity "
        "(e5 cosine of answer and reference: the index's embedder), language (is the answer "
        "in Portuguese), faithfulness (share of the answer's content words in its passages). "
        "The first three cost model time; [] turns all off.")
    pairs: list[list[str]] | None = opt(
        None, "Arm pairs compared question by question, each [a, b] for a − b with a paired "
              "95% interval (e.g. [[finetuned+rag, rag]]); null: every pair of the run's arms, "
              "each later arm of `arms:` minus each earlier one.")
    distractors: int = opt(3, "Wrong answers the reference is ranked against in `choice` "
                              "(references of other questions, same type first; seeded by "
                              "eval.seed).")

    def validate(self) -> None:
        if self.bootstrap_resamples < 0:
            raise ConfigError("eval.bootstrap_resamples must be >= 0")
        if not 0 < self.confidence < 1:
            raise ConfigError("eval.confidence must be between 0 and 1")
        edges = list(self.exposure_bins)
        if not edges or edges[0] != 0 or edges != sorted(set(edges)):
            raise ConfigError("eval.exposure_bins must be increasing lower edges starting at 0")
        if self.max_question_chars < 1:
            raise ConfigError("eval.max_question_chars must be >= 1")
        unknown = [m for m in self.measures if m not in MEASURES]
        if unknown:
            raise ConfigError(f"eval.measures: unknown {', '.join(map(repr, unknown))}; "
                              f"measures: {', '.join(MEASURES)}")
        if self.distractors < 1:
            raise ConfigError("eval.distractors must be >= 1")
        for pair in self.pairs or []:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ConfigError(f"eval.pairs: {pair!r} is not two different arm names [a, b]")


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
    arms: list[ArmConfig] = dataclasses.field(
        default_factory=default_arm_configs, metadata={"help": (
            "The arms compared, over the one base model, with the same decoding: each {name, "
            "adapter (null | true = paths.adapter | a folder), retrieval (null | true = "
            "retrieval: | the settings it changes), label {pt, en}}. Default: base, rag, "
            "finetuned, finetuned+rag. `--arms` picks some by name (docs/comparison.md).")})
    eval: EvalConfig = opt(EvalConfig, "Question files, metrics and reports.")
    demo: DemoConfig = opt(DemoConfig, "What `compara demo` runs.")
    app: AppConfig = opt(AppConfig, "The Streamlit app (`compara app`).")
    source: str | None = opt(None, "The YAML file this config was loaded from (set on load).")

    def validate(self) -> None:
        resolve_arms(self.arms, None, self.retrieval)  # unique names; retrieval changes that fit
        names = {a.name for a in self.arms}
        for pair in self.eval.pairs or []:
            unknown = [n for n in pair if n not in names]
            if unknown:
                raise ConfigError(f"eval.pairs: {pair!r} names {', '.join(unknown)}, not an arm "
                                  f"of `arms:` ({', '.join(names)})")


def load_config(path: str | Path | None = None,
                overrides: list[str] | dict[str, Any] | None = None) -> ExperimentConfig:
    """Load an experiment YAML (default: the shipped sample), apply overrides, resolve paths."""
    from core.paths import default_config_path, project_root

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
    cfg.arms = [a.resolved(base) for a in cfg.arms]
    cfg.ingest.select = cfg.ingest.select.resolved(base)
    cfg.source = str(Path(path).resolve()) if Path(path).is_file() else None
    return cfg
