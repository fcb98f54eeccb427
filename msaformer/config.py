"""Configuration files: YAML loading, dotted ``key=value`` overrides, and the one validator of every config.

Each capability defines its configuration as frozen dataclasses; :func:`from_dict` is the single way a nested
dict (from YAML, ``--set`` overrides or a checkpoint) becomes such a dataclass. It refuses unknown keys, checks
every value against its field's annotation (``int``, ``float``, ``bool``, ``str``, ``list``, ``dict``,
``X | None``, nested dataclasses), reads numbers written as ``1e-4`` (which YAML 1.1 leaves as strings), and
turns the dataclass's own ``__post_init__`` checks into the same :class:`~msaformer.errors.ConfigError`, one
line naming the option (``train.lr must be a number, got 'fast'``).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from msaformer.errors import ConfigError


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Returns the mapping stored in a YAML file (an empty file gives ``{}``)."""
    from msaformer.errors import MsaformerError
    from msaformer.files import read_user_text

    path = Path(path)
    try:
        text = read_user_text(path, "config file")
    except MsaformerError as exc:
        raise ConfigError(str(exc)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, found {type(data).__name__}")
    return data


def apply_overrides(config: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Returns a copy of ``config`` with ``a.b.c=value`` overrides applied; values are parsed as YAML."""
    out = copy.deepcopy(config)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r} has an empty key")
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
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _optional(hint: Any) -> tuple[Any, bool]:
    """Returns ``(inner type, allows None)`` of an annotation."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        allows_none = len(args) < len(typing.get_args(hint))
        return (args[0] if len(args) == 1 else hint), allows_none
    return hint, False


def _check_value(value: Any, hint: Any, name: str) -> Any:
    """Returns ``value`` (coerced where harmless) if it fits ``hint``; raises a one-line ConfigError otherwise."""
    inner, allows_none = _optional(hint)
    if value is None:
        if allows_none or hint is Any:
            return None
        raise ConfigError(f"{name} must not be null")
    base = typing.get_origin(inner) or inner

    def need(what: str) -> ConfigError:
        return ConfigError(f"{name} must be {what}, got {value!r}")

    if base is bool:
        if not isinstance(value, bool):
            raise need("true or false")
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise need("an integer")
        return value
    if base is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise need("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise need("a number")
        return float(value)
    if base is str:
        if not isinstance(value, str):
            raise need("a string")
        return value
    if base in (list, tuple):
        if isinstance(value, str):
            return [value]  # a single item may be given without brackets
        if not isinstance(value, (list, tuple)):
            raise need("a list")
        return list(value)
    if base is dict:
        if not isinstance(value, dict):
            raise need("a mapping (key: value)")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any] | None, where: str = "") -> Any:
    """Returns dataclass ``cls`` built from a nested dict, every field type-checked (see the module docstring).

    ``where`` is the section's dotted name in messages (``"train"``, ``"model"``).
    """
    if data is None:
        data = {}
    label = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{label} must be a section (a mapping of keys), got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(map(str, unknown))} in {label}; known: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints.get(name, Any)
        dotted = f"{where}.{name}" if where else name
        inner, _ = _optional(hint)
        if dataclasses.is_dataclass(inner) and isinstance(inner, type) and value is not None:
            kwargs[name] = value if isinstance(value, inner) else from_dict(inner, value, dotted)
        else:
            kwargs[name] = _check_value(value, hint, dotted)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        message = str(exc)
        if where and not message.startswith(where):
            message = f"{where}.{message}" if message.split(" ", 1)[0] in fields else f"{where}: {message}"
        raise ConfigError(message) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{label}: {exc}") from None


def check_fields(obj: Any, where: str = "") -> None:
    """Raises a one-line ConfigError for the first field of dataclass instance ``obj`` whose value does not fit
    its annotation (the check :func:`from_dict` makes, for objects built directly in Python)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        inner, _ = _optional(hints.get(f.name, Any))
        if dataclasses.is_dataclass(inner):
            continue
        value = getattr(obj, f.name)
        checked = _check_value(value, hints.get(f.name, Any), f"{where}.{f.name}" if where else f.name)
        if isinstance(checked, float) and not isinstance(value, float):
            object.__setattr__(obj, f.name, checked)  # an int or "1e-4" given for a float field


def to_dict(obj: Any) -> dict[str, Any]:
    """Returns a plain nested dict of a (possibly nested) dataclass."""
    return dataclasses.asdict(obj)


def check(condition: bool, message: str) -> None:
    """Raises ``ConfigError(message)`` unless ``condition``: the form of every cross-field check."""
    if not condition:
        raise ConfigError(message)


def resolve_relative(value: str, config_path: str | os.PathLike | None) -> str:
    """Returns a path named in a config file: as given when it exists (or is absolute), else relative to the
    config file's folder or one of its parents where that exists (so ``configs/train/x.yaml`` can name
    ``configs/deepspeed/zero2.json`` from any working directory); else as given."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists() or config_path is None:
        return str(path)
    here = Path(config_path).resolve()
    for base in here.parents:
        candidate = base / path
        if candidate.exists():
            return str(candidate)
    return str(path)
