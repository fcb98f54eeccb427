"""YAML configuration loading with dotted ``key=value`` overrides.

Each capability (training, promoter) defines its own frozen dataclasses; this module only turns files and
override strings into nested dicts, and nested dicts into dataclasses with one-line errors.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from msaformer.errors import ConfigError


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Returns the mapping stored in a YAML file (an empty file gives ``{}``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, found {type(data).__name__}")
    return data


def apply_overrides(config: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Returns a copy of ``config`` with ``a.b.c=value`` overrides applied; values are parsed as YAML."""
    import copy

    out = copy.deepcopy(config)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def from_dict(cls: type, data: dict[str, Any] | None, where: str = "") -> Any:
    """Builds dataclass ``cls`` from a nested dict, recursing into dataclass-typed fields.

    Unknown keys are an error naming the key and the section, so typos never pass silently.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        section = where or cls.__name__
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in [{section}]; known: {', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        ftype = hints.get(f.name)
        if dataclasses.is_dataclass(ftype) and isinstance(value, dict):
            value = from_dict(ftype, value, f"{where}.{f.name}" if where else f.name)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{where or cls.__name__}] {exc}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """Returns a plain nested dict of a (possibly nested) dataclass."""
    return dataclasses.asdict(obj)
