from dataclasses import dataclass, field

import pytest

from datasets_build.configs import build_config, load_yaml, parse_overrides
from datasets_build.errors import ConfigError


@dataclass
class Inner:
    rate: float = 1e-4


@dataclass
class Cfg:
    out: str = "x"
    steps: int = 10
    tasks: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)


def test_layers_and_overrides():
    cfg = build_config(Cfg, {"steps": 3}, parse_overrides(["inner.rate=0.5", "tasks=[a, b]"]))
    assert cfg == Cfg(out="x", steps=3, tasks=["a", "b"], inner=Inner(rate=0.5))


def test_unknown_key_is_one_line_error():
    with pytest.raises(ConfigError, match=r"^recipe.yaml: stepz: unknown key$"):
        build_config(Cfg, {"stepz": 3}, where="recipe.yaml")


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match="steps") as err:
        build_config(Cfg, {"steps": "many"})
    assert "\n" not in str(err.value)


def test_override_syntax():
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["steps"])


def test_malformed_yaml(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("stages: [a, b\n")
    with pytest.raises(ConfigError, match=r"r.yaml: line \d+ malformed YAML"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_yaml(tmp_path / "missing.yaml")
