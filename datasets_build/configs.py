"""Typed dataclass configs from YAML mappings and `key=value` overrides, strictly (unknown keys are errors).

Built on OmegaConf structured configs; errors are folded into one `ConfigError` line naming the
file and the key at fault.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from datasets_build.errors import ConfigError

T = TypeVar("T")


def _one_line(exc: OmegaConfBaseException, where: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    message = str(getattr(exc, "msg", None) or exc).splitlines()[0]
    if type(exc).__name__ == "ConfigKeyError" and "not in" in message:
        message = "unknown key"
    return ConfigError(f"{where}: {key}: {message}" if key else f"{where}: {message}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (one-line ConfigError on a missing file or bad YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{line} malformed YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def parse_overrides(overrides: Sequence[str], where: str = "command line") -> dict[str, Any]:
    """`["a.b=3", "c=x"]` -> nested dict with YAML-typed values."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{where}: override {item!r} is not key=value")
        key, _, raw = item.partition("=")
        if not key:
            raise ConfigError(f"{where}: override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def build_config(cls: type[T], *layers: Mapping[str, Any] | DictConfig | None, where: str = "config") -> T:
    """Merge `layers` onto the defaults of dataclass `cls` and return a validated instance.

    A class may define `config_layers(layers) -> layers` (a classmethod) to add layers that depend on what the
    given ones set, e.g. a preset named by a key, inserted underneath so that explicit keys still win.
    """
    hook = getattr(cls, "config_layers", None)
    try:
        present = [layer for layer in layers if layer]
        if hook is not None:
            try:
                present = hook(present)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
        merged = OmegaConf.structured(cls)
        for layer in present:
            if layer:
                merged = OmegaConf.merge(merged, layer)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise _one_line(exc, where) from exc


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a plain dict (for cards and the resolved recipe)."""
    if not is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return asdict(config)
