"""Typed configuration: small dataclasses, one per stage, loaded from YAML with overrides.

Every stage (ingest, index, finetune, generation, ...) declares its settings as a dataclass
that inherits :class:`ConfigBase`. Each field carries its help text (``opt(default, "help")``),
values are type-checked and coerced on load, unknown keys are refused with the list of valid
ones, and ``validate()`` checks ranges. The resolved config is written next to every output so
any result can be reproduced.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from core.errors import UserError

T = TypeVar("T", bound="ConfigBase")


class ConfigError(UserError, ValueError):
    """A configuration value is missing, unknown or out of range."""


def opt(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a default and its help text (shown by ``compara config``)."""
    if isinstance(default, (list, dict, set)):
        factory = type(default)
        value = default
        return dataclasses.field(
            default_factory=lambda: factory(value), metadata={"help": help}, **kwargs
        )
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def _is_config_class(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, ConfigBase)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Coerce a YAML/CLI value to the annotated type, or raise ConfigError naming ``where``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (list, tuple):
        (item_tp, *_) = get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if _is_config_class(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return tp.from_dict(value, where=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "yes", "1", "on"}:
            return True
        if isinstance(value, str) and value.lower() in {"false", "no", "0", "off"}:
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


@dataclasses.dataclass
class ConfigBase:
    """Base of every stage config: validation on construction, dict/YAML round trip."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check ranges and combinations; raise ConfigError with the field's dotted name."""

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
        data = dict(data or {})
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            prefix = f"{where}." if where else ""
            raise ConfigError(
                f"unknown setting(s) {', '.join(prefix + u for u in unknown)}; "
                f"valid keys{' of ' + where if where else ''}: {', '.join(sorted(fields))}"
            )
        kwargs = {}
        for name, value in data.items():
            kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where else name)
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)

    def with_overrides(self: T, overrides: dict[str, Any] | list[str] | None) -> T:
        """A copy with ``{"a.b": value}`` or ``["a.b=value"]`` overrides applied."""
        data = self.to_dict()
        apply_overrides(data, overrides)
        return type(self).from_dict(data)

    # -- documentation --------------------------------------------------------------------
    @classmethod
    def describe(cls, prefix: str = "") -> list[tuple[str, str, Any]]:
        """(dotted name, help, default) for every field, recursively."""
        rows: list[tuple[str, str, Any]] = []
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            name = f"{prefix}{f.name}"
            tp = hints[f.name]
            if _is_config_class(tp):
                rows.extend(tp.describe(prefix=name + "."))
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            if isinstance(default, list):  # a list of sections (the arms): as YAML shows them
                default = [d.to_dict() if isinstance(d, ConfigBase) else d for d in default]
            rows.append((name, f.metadata.get("help", ""), default))
        return rows


def parse_override(item: str) -> tuple[str, Any]:
    """``"finetune.lr=1e-4"`` -> ``("finetune.lr", 0.0001)``; the value is read as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. finetune.lr=1e-4)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | list[str] | None) -> None:
    """Set dotted keys in a nested dict, in place."""
    if not overrides:
        return
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in items:
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def dump_yaml(data: dict[str, Any], path: str | Path) -> None:
    from core.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
