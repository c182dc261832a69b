"""The arms of a comparison, as data.

An arm is a name, an adapter (none, the experiment's, or another folder) and retrieval settings
(none, the experiment's, or the experiment's with some changed). The experiment config's
``arms:`` list holds them; the default is the four arms of the study::

    arms:
      - {name: base}
      - {name: rag, retrieval: true}
      - {name: finetuned, adapter: true}
      - {name: finetuned+rag, adapter: true, retrieval: true}
      - {name: rag-dense, retrieval: {retriever: dense}}          # a fifth arm
      - {name: ft-r64, adapter: adapters/r64, label: {pt: "Ajustado r64"}}

Every arm runs on the one loaded base model with the same quantisation and decoding settings;
an arm with an adapter switches that adapter on (several adapters are loaded side by side on
the same weights), an arm without one switches adapters off. What an arm needs (an adapter, an
index) is answered here and only here (:attr:`Arm.needs_adapter`, :attr:`Arm.needs_index`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.configbase import ConfigBase, ConfigError, opt
from core.errors import UserError

if TYPE_CHECKING:
    from rag.config import RetrievalConfig

# Retrieval settings that have always been part of an answer's identity; an arm that changes
# any other one adds it (so the identities, cache keys and votes of the four default arms are
# those of earlier versions).
RETRIEVAL_IDENTITY = ("retriever", "k")
LANGUAGES = ("pt", "en")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]*")


class ArmUnavailable(UserError, ValueError):
    """An arm was asked for that is unknown, or whose adapter or index is missing."""


@dataclass
class ArmConfig(ConfigBase):
    """One arm of the comparison (an item of the experiment's ``arms:`` list)."""

    name: str = opt("", "Unique name, shown in results, reports and the app; `--arms` selects "
                        "by it (letters, digits, _ . + -).")
    adapter: bool | str | None = opt(
        None, "null: no adapter (the base weights); true: the experiment's adapter "
              "(paths.adapter); a folder: that adapter, loaded next to the others on the same "
              "base weights (relative to the config file).")
    retrieval: bool | dict[str, Any] | None = opt(
        None, "null: no passages; true: the experiment's retrieval settings; a mapping: those "
              "settings with some changed (e.g. {retriever: dense, k: 8}).")
    label: dict[str, str] = opt({}, "Names shown in the app per language ({pt: ..., en: ...}); "
                                    "default: the usual names of the four arms, else the name.")

    def validate(self) -> None:
        if not self.name or not _NAME.fullmatch(self.name):
            raise ConfigError(f"arms: name {self.name!r} must start with a letter or digit and "
                              "hold only letters, digits, _ . + -")
        if isinstance(self.adapter, str) and not self.adapter.strip():
            raise ConfigError(f"arms: {self.name}: adapter is an empty folder name")
        if self.adapter is False:
            self.adapter = None
        if self.retrieval is False:
            self.retrieval = None
        unknown = sorted(set(self.label) - set(LANGUAGES))
        if unknown:
            raise ConfigError(f"arms: {self.name}: label languages {', '.join(unknown)} unknown; "
                              f"languages: {', '.join(LANGUAGES)}")

    def resolved(self, base: Path) -> ArmConfig:
        """A copy whose adapter folder is absolute (relative ones: to ``base``)."""
        from core.paths import under

        if not isinstance(self.adapter, str):
            return self
        return self.replace(adapter=under(base, self.adapter))


def default_arm_configs() -> list[ArmConfig]:
    """The four arms of the study, with the names every earlier run used."""
    return [ArmConfig(name="base"), ArmConfig(name="rag", retrieval=True),
            ArmConfig(name="finetuned", adapter=True),
            ArmConfig(name="finetuned+rag", adapter=True, retrieval=True)]


DEFAULT_ARMS = tuple(a.name for a in default_arm_configs())
DEFAULT_LABELS = {
    "base": {"pt": "Base", "en": "Base"},
    "rag": {"pt": "Base + RAG", "en": "Base + RAG"},
    "finetuned": {"pt": "Ajustado (QLoRA)", "en": "Fine-tuned (QLoRA)"},
    "finetuned+rag": {"pt": "Ajustado + RAG", "en": "Fine-tuned + RAG"},
}


def check_arm_list(arms: Sequence[ArmConfig]) -> None:
    """Names are unique and there is at least one arm."""
    if not arms:
        raise ConfigError("arms: the list is empty; give at least one arm (e.g. {name: base})")
    seen: set[str] = set()
    for arm in arms:
        if arm.name in seen:
            raise ConfigError(f"arms: the name {arm.name!r} is used twice")
        seen.add(arm.name)


@dataclass
class Arm:
    """An arm resolved against its experiment: the adapter folder it switches on (None: none;
    "": the experiment's, which it does not have) and the retrieval settings it retrieves with
    (None: no passages)."""

    name: str
    adapter: str | None = None
    retrieval: RetrievalConfig | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # retrieval settings it changes
    label: dict[str, str] = field(default_factory=dict)

    @property
    def needs_adapter(self) -> bool:
        return self.adapter is not None

    @property
    def needs_index(self) -> bool:
        return self.retrieval is not None

    @property
    def adapter_on_disk(self) -> bool:
        """Its adapter folder exists (an arm without an adapter: True)."""
        return not self.needs_adapter or bool(
            self.adapter and (Path(self.adapter) / "adapter_config.json").is_file())

    def missing_files(self, index_dir: str | None) -> list[str]:
        """What this arm needs that is not on disk (before anything is loaded), said the way
        a user fixes it; [] when its adapter folder and the index exist."""
        problems = []
        if not self.adapter_on_disk:
            where = self.adapter or "paths.adapter (none set)"
            problems.append(f"arm {self.name!r} needs an adapter, but there is none at {where} "
                            "(run `compara finetune`, or pass --adapter DIR)")
        if self.needs_index and not (index_dir and (Path(index_dir) / "manifest.json").is_file()):
            problems.append(f"arm {self.name!r} needs an index, but there is none at "
                            f"{index_dir or 'paths.index (none set)'} (run `compara index`, or "
                            "pass --index DIR)")
        return problems

    def describe(self) -> dict[str, Any]:
        """What the arm is, for people and --json: adapter folder, retrieval settings."""
        return {"name": self.name, "label": self.title("pt"),
                "adapter": self.adapter if self.needs_adapter else None,
                "retrieval": self.retrieval_identity()}

    def retrieval_identity(self) -> dict[str, Any] | None:
        """The retrieval settings an answer of this arm depends on (None: no retrieval)."""
        if self.retrieval is None:
            return None
        keys = [*RETRIEVAL_IDENTITY, *sorted(k for k in self.overrides
                                             if k not in RETRIEVAL_IDENTITY)]
        return {k: getattr(self.retrieval, k) for k in keys}

    def with_retrieval(self, retrieval: RetrievalConfig) -> Arm:
        """This arm over other experiment-wide retrieval settings (its own changes kept)."""
        if self.retrieval is None:
            return self
        return replace(self, retrieval=_merged(self.name, retrieval, self.overrides))

    def title(self, lang: str = "pt") -> str:
        """The arm's name for people, in ``lang``."""
        usual = DEFAULT_LABELS.get(self.name, {})
        return (self.label.get(lang) or usual.get(lang) or next(iter(self.label.values()), None)
                or self.name)


def resolve_arms(configs: Sequence[ArmConfig], adapter: str | None,
                 retrieval: RetrievalConfig) -> list[Arm]:
    """The arms of ``configs`` with ``adapter: true`` read as ``adapter`` (the experiment's
    ``paths.adapter``; None when it has none) and retrieval merged into ``retrieval``."""
    check_arm_list(configs)
    out = []
    for c in configs:
        folder = (adapter or "") if c.adapter is True else c.adapter
        overrides = dict(c.retrieval) if isinstance(c.retrieval, dict) else {}
        settings = _merged(c.name, retrieval, overrides) if c.retrieval is not None else None
        out.append(Arm(name=c.name, adapter=folder, retrieval=settings, overrides=overrides,
                       label=dict(c.label)))
    return out


def _merged(name: str, retrieval: RetrievalConfig, overrides: dict[str, Any]) -> RetrievalConfig:
    if not overrides:
        return retrieval
    try:
        return retrieval.with_overrides(overrides)
    except ConfigError as exc:
        raise ConfigError(f"arms: {name}: retrieval: {exc}") from None


def experiment_arms(cfg: Any) -> list[Arm]:
    """The arms of an experiment config (:class:`compara.config.ExperimentConfig`)."""
    return resolve_arms(cfg.arms, cfg.paths.adapter, cfg.retrieval)


def select(arms: Sequence[Arm], names: Iterable[str] | None) -> list[Arm]:
    """The arms named (in the order named, once each), or all of them; refuses an unknown
    name with the list of known ones."""
    if not names:
        return list(arms)
    by_name = {a.name: a for a in arms}
    wanted = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise ArmUnavailable(f"unknown arm(s) {', '.join(unknown)}; the experiment's arms: "
                             f"{', '.join(by_name)} (the config's `arms:` list)")
    return [by_name[n] for n in wanted]


def parse_names(value: str | None) -> list[str] | None:
    """``--arms base,rag`` -> ["base", "rag"] (None: every arm)."""
    names = [a.strip() for a in (value or "").split(",") if a.strip()]
    return names or None


def arm_order(names: Iterable[str], configured: Sequence[str] = DEFAULT_ARMS) -> list[str]:
    """``names`` in the configured order, then any other by name."""
    present = set(names)
    return [a for a in configured if a in present] + sorted(present - set(configured))


def arm_pairs(arms: Sequence[str], pairs: Sequence[Sequence[str]] | None = None
              ) -> list[tuple[str, str]]:
    """Arm pairs compared question by question (a − b): the ``pairs`` named (those whose arms
    are both present), else every pair, each later arm minus each earlier one."""
    present = list(arms)
    if pairs:
        return [(a, b) for a, b in pairs if a in present and b in present]
    return [(b, a) for a, b in itertools.combinations(present, 2)]
