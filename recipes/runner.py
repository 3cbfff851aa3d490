"""Run a recipe: `recipes/NAME.yaml` -> typed stage configs -> stages in order.

A recipe is a YAML mapping with `vars` (free values, usable as `${vars.x}`), optional `env` (environment
variables set before any stage module is imported, e.g. HF_HOME for an offline cache) and `stages`, an
ordered mapping from stage name to that stage's config; `uses: KIND` picks the stage kind when the
name is not itself a kind. Overrides `STAGE.KEY=VALUE` or `vars.KEY=VALUE` (or `KEY=VALUE` for a
var) are applied before validation; unknown keys are errors. Called by `recipes/run.sh`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from datasets_build.configs import build_config, config_to_dict, load_yaml, parse_overrides
from datasets_build.errors import ConfigError, ToolkitError

RECIPES_DIR = Path(__file__).resolve().parent
TOP_LEVEL_KEYS = {"description", "env", "vars", "stages"}


@dataclass(frozen=True)
class StageKind:
    """A stage: its config dataclass and the function that runs it, as "module:attribute" strings."""

    config: str
    run: str
    help: str

    def load(self, ref: str) -> Any:
        module, _, attr = ref.partition(":")
        return getattr(importlib.import_module(module), attr)


# Later stages (build, sft, vla, evaluation) register here as their packages land.
STAGE_KINDS: dict[str, StageKind] = {
    "demo_episodes": StageKind(
        "datasets_build.demo_episodes:DemoEpisodesConfig",
        "datasets_build.demo_episodes:record_demo_episodes",
        "record scripted-expert episodes of the demo sim (LeRobot v3.0 + geometry)",
    ),
    "expert_eval": StageKind(
        "datasets_build.sim.evaluate:ExpertEvalConfig",
        "datasets_build.sim.evaluate:evaluate_expert",
        "success rate of the demo sim's scripted expert per task family",
    ),
    "build": StageKind(
        "datasets_build.corpora.build:BuildConfig",
        "datasets_build.corpora.build:build_corpus",
        "build an auxiliary corpus (e.g. robo2vlm) from a robot dataset into shards",
    ),
    "fit_fast": StageKind(
        "datasets_build.fast.fit:FitFastConfig",
        "datasets_build.fast.fit:fit_fast",
        "fit a FAST action tokenizer (DCT + BPE) on a source's action chunks",
    ),
    "mix": StageKind(
        "datasets_build.corpora.mix:MixConfig",
        "datasets_build.corpora.mix:mix_shards",
        "interleave built corpora and general VQA into one shard set (e.g. vqa_mix)",
    ),
    "sft_train": StageKind(
        "sft.config:SFTTrainConfig",
        "sft.train:train",
        "post-train a Qwen-VL model on corpus shards (TRL SFT; freezing, LoRA, FAST tokens, omni head)",
    ),
    "sft_evaluate": StageKind(
        "sft.evaluate:EvaluateConfig",
        "sft.evaluate:evaluate",
        "generate answers of a checkpoint on shards and score them per task",
    ),
    "sft_push": StageKind("sft.push:PushConfig", "sft.push:push", "upload a checkpoint folder to the Hub"),
    "vla_train": StageKind(
        "vla.configuration_vla:VLATrainConfig",
        "vla.train:train",
        "train a VLA (VLM + <ActionQuery> + MLP head) on robot data; a checkpoint every save_every steps",
    ),
    "tiny_models": StageKind(
        "datasets_build.tiny_models:TinyModelsConfig",
        "datasets_build.tiny_models:install_tiny_models",
        "install tiny random VLMs under the paper's Hub ids in the HF cache (offline demo)",
    ),
    "evaluate": StageKind(
        "evaluation.run:RunConfig",
        "evaluation.run:run",
        "roll a policy out in a simulator (demo, libero, calvin, simpler, maniskill); resumable",
    ),
    "merge_eval": StageKind(
        "evaluation.merge:MergeConfig",
        "evaluation.merge:merge",
        "join the shard runs of one evaluation (--num-shards N) into one summary; refuses an incomplete set",
    ),
    "sweep": StageKind(
        "evaluation.sweep:SweepConfig",
        "evaluation.sweep:sweep",
        "evaluate every checkpoint of a training run in every chunk mode; best-of reported",
    ),
    "report": StageKind(
        "evaluation.report:ReportConfig",
        "evaluation.report:report",
        "paper-style tables (Markdown, CSV, LaTeX) and plots from evaluation results",
    ),
    "verify": StageKind(
        "datasets_build.corpora.build:VerifyConfig",
        "datasets_build.corpora.build:run_verify",
        "re-check every answer of a built corpus against the facts in its meta",
    ),
}


@dataclass
class PlannedStage:
    """One resolved stage of a recipe."""

    name: str
    kind: str
    config: Any


def _route_overrides(recipe: dict[str, Any], overrides: list[str], where: str) -> dict[str, Any]:
    stages = recipe.get("stages") or {}
    variables = recipe.get("vars") or {}
    routed: list[str] = []
    for item in overrides:
        key = item.partition("=")[0]
        head = key.split(".")[0]
        if head in ("vars", "stages", "env"):
            routed.append(item)
        elif head in stages:
            routed.append(f"stages.{item}")
        elif head in variables and "." not in key:
            routed.append(f"vars.{item}")
        else:
            raise ConfigError(f"{where}: override {key!r}: unknown key (not a stage of this recipe nor a var)")
    return parse_overrides(routed, where)


def apply_env(env: Any, where: str) -> None:
    """Set the recipe's `env` mapping (e.g. HF_HOME, HF_HUB_OFFLINE) in this process and its children."""
    if env is None:
        return
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | bool) for k, v in env.items()
    ):
        raise ConfigError(f"{where}: env: must map variable names to strings")
    for key, value in env.items():
        os.environ[key] = str(int(value)) if isinstance(value, bool) else str(value)


def plan_recipe(
    path: Path, overrides: list[str], only: list[str] | None = None, set_env: bool = False
) -> list[PlannedStage]:
    """Load, override, interpolate and validate a recipe into typed stage configs.

    With `set_env` the recipe's `env` is put into `os.environ` first (before any stage module is imported,
    as huggingface_hub reads HF_HOME at import); planning alone (tests, --dry-run) leaves the environment as is.
    """
    where = str(path)
    raw = load_yaml(path)
    unknown = set(raw) - TOP_LEVEL_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {sorted(unknown)} (allowed: {sorted(TOP_LEVEL_KEYS)})")
    if not isinstance(raw.get("stages"), dict) or not raw["stages"]:
        raise ConfigError(f"{where}: stages: must be a non-empty mapping of stage name -> config")
    try:
        merged = OmegaConf.merge(OmegaConf.create(raw), OmegaConf.create(_route_overrides(raw, overrides, where)))
        resolved = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{where}: {str(exc).splitlines()[0]}") from exc
    assert isinstance(resolved, dict)
    if set_env:
        apply_env(resolved.get("env"), where)
    elif resolved.get("env") is not None and not isinstance(resolved.get("env"), dict):
        raise ConfigError(f"{where}: env: must map variable names to strings")
    plan: list[PlannedStage] = []
    for name, raw_body in resolved["stages"].items():
        body = dict(raw_body or {})
        kind = body.pop("uses", name)
        if kind not in STAGE_KINDS:
            raise ConfigError(f"{where}: stages.{name}: unknown stage kind {kind!r}; known: {sorted(STAGE_KINDS)}")
        spec = STAGE_KINDS[kind]
        config = build_config(spec.load(spec.config), body, where=f"{where}: stages.{name}")
        plan.append(PlannedStage(name, kind, config))
    if only:
        missing = set(only) - {p.name for p in plan}
        if missing:
            raise ConfigError(f"{where}: --stage {sorted(missing)} not in this recipe")
        plan = [p for p in plan if p.name in only]
    return plan


def main(argv: list[str] | None = None) -> int:
    """Entry point of `recipes/run.sh`."""
    parser = argparse.ArgumentParser(
        prog="recipes/run.sh",
        description="Run the stages of recipes/NAME.yaml in order, with key=value overrides.",
        epilog="Recipes: " + ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))),
    )
    parser.add_argument("name", help="recipe name (recipes/NAME.yaml) or a path to a YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="STAGE.KEY=VALUE or vars.KEY=VALUE")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved plan and exit")
    parser.add_argument("--stage", action="append", help="run only this stage (repeatable)")
    args = parser.parse_intermixed_args(argv)
    path = Path(args.name) if args.name.endswith((".yaml", ".yml")) else RECIPES_DIR / f"{args.name}.yaml"
    try:
        plan = plan_recipe(path, args.overrides, args.stage, set_env=not args.dry_run)
        if args.dry_run:
            doc = {p.name: {"uses": p.kind, **config_to_dict(p.config)} for p in plan}
            print(f"# recipe {path} ({len(plan)} stages, in order)")
            print(yaml.safe_dump(doc, sort_keys=False), end="")
            return 0
        for i, stage in enumerate(plan, 1):
            print(f"[recipe] stage {i}/{len(plan)}: {stage.name} ({stage.kind})", flush=True)
            start = time.perf_counter()
            spec = STAGE_KINDS[stage.kind]
            result = spec.load(spec.run)(stage.config)
            if result is not None:
                print(json.dumps(result, indent=2, default=str))
            print(f"[recipe] {stage.name} done in {time.perf_counter() - start:.1f} s", flush=True)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
