"""Run a recipe: `recipes/NAME.yaml` -> typed stage configs -> stages in order, cached, resumable, multi-GPU.

A recipe is a YAML mapping: `vars` (free values, `${vars.x}`), `env` (environment variables set before any stage
runs, e.g. HF_HOME for an offline cache), `launch` (how training stages start: `recipe_launch.LaunchConfig`),
`profiles` (named partial recipes merged on top, e.g. `tiny`), `extends` (a template recipe this one is merged
onto) and `stages`, an ordered mapping from stage name to that stage's config; `uses: KIND` picks the stage
kind when the name is not itself a kind, `launch:` overrides the recipe's launch block for that stage, `after:`
names stages it waits for beyond those whose outputs it reads, `like: OTHER` starts from another stage's body
(a grid of variants in a few lines). Overrides `VAR=VALUE`, `vars.KEY=VALUE`,
`STAGE.KEY=VALUE`, `launch.KEY=VALUE`, `env.KEY=VALUE` and `profile=NAME` are applied before validation;
unknown keys are errors. `${vars.recipe}` is the recipe's name (a template names its run folder with it).

Each stage is cached by fingerprint (`recipe_cache`): a finished stage whose fingerprint matches is skipped, a
started one resumes, and a finished output with another fingerprint is never deleted without `--force STAGE`.
What each stage kind writes, reads and calls complete is in `recipe_kinds`; how training stages are launched in
`recipe_launch`. Called by `recipes/run.sh`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

RECIPES_DIR = Path(__file__).resolve().parent
if str(RECIPES_DIR) not in sys.path:
    sys.path.insert(0, str(RECIPES_DIR))
if str(RECIPES_DIR.parent) not in sys.path:  # the toolkit of this checkout, as launched stages get it (_child_env)
    sys.path.insert(1, str(RECIPES_DIR.parent))

from recipe_cache import (  # noqa: E402
    RECORD_NAME,
    Marker,
    StageRecord,
    differences,
    digest,
    outside_fingerprint,
    package_version,
    set_path,
    state_lock,
    strip_keys,
    write_json,
)
from recipe_kinds import (  # noqa: E402
    EXECUTION_ONLY,
    STAGE_KINDS,
    Ref,
    StageKind,
    cached_model,
    cached_revision,
    hub_cache,
)
from recipe_launch import ERROR_SUFFIX, LaunchConfig, describe, launch_command, launcher_available  # noqa: E402

from datasets_build import faults  # noqa: E402
from datasets_build.configs import build_config, config_to_dict, load_yaml, parse_overrides  # noqa: E402
from datasets_build.errors import (  # noqa: E402
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    ConfigError,
    DataError,
    ToolkitError,
    one_line,
)
from datasets_build.progress import quiet_third_party  # noqa: E402

TOP_LEVEL_KEYS = {"description", "extends", "env", "vars", "launch", "profiles", "stages", "state_dir"}
STAGE_META_KEYS = ("uses", "launch", "after")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PREFIX = "[recipe]"


@dataclass
class PlannedStage:
    """One resolved stage of a recipe: its typed config and what the runner knows about it."""

    name: str
    kind: str
    config: Any
    spec: StageKind = field(repr=False)
    launch: LaunchConfig | None = None
    after: list[str] = field(default_factory=list)
    output: str | None = None
    refs: list[Ref] = field(default_factory=list)
    deps: list[str] = field(default_factory=list)  # upstream stages, in recipe order
    produced_by: dict[str, list[str]] = field(default_factory=dict)  # ref field -> the earlier stages writing it
    upstream_outputs: dict[str, str] = field(default_factory=dict)  # upstream stage -> its output folder


@dataclass
class Plan:
    """A resolved recipe: where it came from, its environment, state folder and stages."""

    path: Path
    profile: str
    description: str
    env: dict[str, str]
    state_dir: Path
    stages: list[PlannedStage]
    problems: list[str] = field(default_factory=list)  # missing inputs; a real run stops at the first
    notes: list[str] = field(default_factory=list)  # models a run will download

    def stage(self, name: str) -> PlannedStage:
        """The stage called `name`."""
        return next(s for s in self.stages if s.name == name)

    def effective_env(self) -> dict[str, str]:
        """The environment the stages run in: this process's, with the recipe's `env` on top."""
        return {**os.environ, **self.env}


# ---------------------------------------------------------------------------------------------- loading
def recipe_path(name: str) -> Path:
    """`recipes/NAME.yaml` for a bare name, else the path as given."""
    return Path(name) if name.endswith((".yaml", ".yml")) or os.sep in name else RECIPES_DIR / f"{name}.yaml"


def _merge(base: Any, top: Any, at: str = "") -> Any:
    """Recursive merge of plain mappings: top wins, key order of base kept, new keys appended, lists replaced.
    A stage set to null over a template's (or in a profile) is removed."""
    if isinstance(base, dict) and isinstance(top, dict):
        out = dict(base)
        for key, value in top.items():
            if (at == "stages" or at.endswith(".stages")) and value is None and key in base:
                out.pop(key)
            elif key in base and value is not None:
                out[key] = _merge(base[key], value, key if not at else f"{at}.{key}")
            else:
                out[key] = copy.deepcopy(value)
        return out
    return copy.deepcopy(top)


def load_recipe(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The recipe at `path` merged onto the template(s) it `extends` (paths relative to the recipe's folder)."""
    raw = load_yaml(path)
    unknown = set(raw) - TOP_LEVEL_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)} (allowed: {sorted(TOP_LEVEL_KEYS)})")
    parents = raw.pop("extends", None)
    if parents is None:
        return raw
    merged: dict[str, Any] = {}
    names = [parents] if isinstance(parents, str) else parents
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: extends: must be a template file name or a list of them, got {parents!r}"[:300])
    for parent in names:
        try:
            parent_path = (path.parent / parent).resolve()
            found = parent_path.is_file()
        except (OSError, ValueError) as exc:  # a name too long, or with a NUL byte
            raise ConfigError(f"{path}: extends: {parent[:80]!r}: not a usable file name ({exc})") from exc
        if parent_path in seen or parent_path == path.resolve():
            raise ConfigError(f"{path}: extends: {parent} includes itself")
        if not found:
            raise ConfigError(f"{path}: extends: {parent}: no such template beside the recipe")
        merged = _merge(merged, load_recipe(parent_path, (*seen, path.resolve())))
    return _merge(merged, raw)


def _route_overrides(recipe: dict[str, Any], overrides: list[str], where: str) -> dict[str, Any]:
    stages = recipe.get("stages") or {}
    variables = recipe.get("vars") or {}
    routed: list[str] = []
    for item in overrides:
        key = item.partition("=")[0]
        head = key.split(".")[0]
        if head in ("vars", "stages", "env", "launch", "state_dir"):
            routed.append(item)
        elif head in stages:
            routed.append(f"stages.{item}")
        elif head in variables and "." not in key:
            routed.append(f"vars.{item}")
        else:
            raise ConfigError(f"{where}: override {key!r}: unknown key (not a stage of this recipe nor a var)")
    return parse_overrides(routed, where)


def _split_profile(overrides: list[str], profile: str | None) -> tuple[list[str], str | None]:
    rest = []
    for item in overrides:
        if item.startswith("profile="):
            profile = item.partition("=")[2]
        else:
            rest.append(item)
    return rest, profile


def _env_block(env: Any, where: str) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | bool | float) for k, v in env.items()
    ):
        raise ConfigError(f"{where}: env: must map variable names to strings")
    return {k: str(int(v)) if isinstance(v, bool) else str(v) for k, v in env.items()}


def apply_env(env: Any, where: str) -> None:
    """Set the recipe's `env` mapping (e.g. HF_HOME, HF_HUB_OFFLINE) in this process and its children."""
    os.environ.update(_env_block(env, where))


def auto_workers() -> int:
    """`workers: auto`: the cores this job may use (SLURM_CPUS_PER_TASK on a cluster, else the CPU affinity)."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    return int(slurm) if slurm and slurm.isdigit() else max(1, len(os.sched_getaffinity(0)))


def _launch_config(recipe_launch: Any, stage_launch: Any, where: str) -> LaunchConfig:
    layers = [x for x in (recipe_launch, stage_launch) if x]
    for layer in layers:
        if not isinstance(layer, dict):
            raise ConfigError(f"{where}: launch: must be a mapping (launcher, num_processes, config, ...)")
    try:
        return build_config(LaunchConfig, *layers, where=f"{where}: launch")
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(where) else f"{where}: launch.{message}") from exc


def _norm(path: str) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(path)))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def plan_recipe(
    path: Path,
    overrides: list[str],
    only: list[str] | None = None,
    set_env: bool = False,
    profile: str | None = None,
) -> list[PlannedStage]:
    """Load, override, interpolate and validate a recipe into typed stage configs (in order; `only` filters).

    With `set_env` the recipe's `env` is put into `os.environ` first (before any stage module is imported, as
    huggingface_hub reads HF_HOME at import); planning alone (tests, --dry-run) leaves the environment as is.
    """
    plan = make_plan(path, overrides, profile=profile)
    if set_env:
        os.environ.update(plan.env)
    if only:
        missing = set(only) - {s.name for s in plan.stages}
        if missing:
            raise ConfigError(f"{path}: --only {sorted(missing)} not in this recipe")
        return [s for s in plan.stages if s.name in only]
    return plan.stages


def make_plan(path: Path, overrides: list[str], profile: str | None = None) -> Plan:
    """The resolved, validated recipe with its stage graph and the problems of its inputs (see `Plan`)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    where = str(path)
    raw = load_recipe(path)
    overrides, profile = _split_profile(list(overrides), profile)
    profiles = raw.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{where}: profiles: must map profile names to partial recipes")
    chosen = profile or "full"
    if profile and profile != "full":
        if profile not in profiles:
            raise ConfigError(f"{where}: profile {profile!r}: not defined (profiles: {['full', *sorted(profiles)]})")
        extra = profiles[profile] or {}
        bad = set(extra) - (TOP_LEVEL_KEYS - {"profiles", "extends"})
        if bad:
            raise ConfigError(f"{where}: profiles.{profile}: unknown key(s) {sorted(bad)}")
        raw = _merge(raw, extra)
    if not isinstance(raw.get("stages"), dict) or not raw["stages"]:
        raise ConfigError(f"{where}: stages: must be a non-empty mapping of stage name -> config")
    raw["stages"] = _expand_like(raw["stages"], where)
    if not isinstance(raw.get("vars") or {}, dict):
        raise ConfigError(f"{where}: vars: must be a mapping of names to values, got {type(raw['vars']).__name__}")
    raw["vars"] = {"recipe": path.stem, **(raw.get("vars") or {})}  # ${vars.recipe}: this recipe's name
    try:
        merged = OmegaConf.merge(OmegaConf.create(raw), OmegaConf.create(_route_overrides(raw, overrides, where)))
        resolved = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{where}: {str(exc).splitlines()[0]}") from exc
    assert isinstance(resolved, dict)
    env = _env_block(resolved.get("env"), where)
    variables = resolved.get("vars") or {}
    default_state = Path(str(variables["run_dir"])) if "run_dir" in variables else Path("runs") / path.stem
    state_dir = Path(str(resolved.get("state_dir") or default_state / ".recipe"))
    stages = [_plan_stage(name, body, resolved.get("launch"), where) for name, body in resolved["stages"].items()]
    plan = Plan(path, chosen, str(resolved.get("description") or ""), env, state_dir, stages)
    _link(plan, where)
    plan.problems, plan.notes = _input_problems(plan, where)
    return plan


def _expand_like(stages: dict[str, Any], where: str) -> dict[str, Any]:
    """`like: OTHER` in a stage body: that stage's body (itself expanded) under this one's keys."""
    out: dict[str, Any] = {}

    def expand(name: str, chain: tuple[str, ...]) -> dict[str, Any]:
        body = stages[name] or {}
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: stages.{name}: must be a mapping of config keys")
        like = body.get("like")
        if like is None:
            return dict(body)
        if not isinstance(like, str) or like not in stages:
            raise ConfigError(f"{where}: stages.{name}.like: {like!r} is not a stage of this recipe")
        if like in chain:
            raise ConfigError(f"{where}: stages.{name}.like: {like!r} refers back to itself")
        base = expand(str(like), (*chain, name))
        merged: dict[str, Any] = _merge(base, {k: v for k, v in body.items() if k != "like"})
        return merged

    for name in stages:
        out[name] = expand(name, (name,))
    return out


def _plan_stage(name: str, raw_body: Any, recipe_launch: Any, where: str) -> PlannedStage:
    if raw_body is not None and not isinstance(raw_body, dict):
        raise ConfigError(f"{where}: stages.{name}: must be a mapping of config keys")
    body = dict(raw_body or {})
    kind_name = body.pop("uses", name)
    if kind_name not in STAGE_KINDS:
        raise ConfigError(f"{where}: stages.{name}: unknown stage kind {kind_name!r}; known: {sorted(STAGE_KINDS)}")
    spec = STAGE_KINDS[kind_name]
    stage_launch = body.pop("launch", None)
    after = body.pop("after", None) or []
    if isinstance(after, str):
        after = [after]
    if body.get("overwrite") is True:
        raise ConfigError(
            f"{where}: stages.{name}.overwrite: recipes never overwrite; the runner replaces a finished output "
            f"only with --force {name}"
        )
    for key in spec.workers:
        if body.get(key) == "auto":
            body[key] = auto_workers()
    try:
        config_class = spec.config_class()
    except ImportError as exc:
        raise ConfigError(f"{where}: stages.{name}: stage kind {kind_name!r} is not available here ({exc})") from exc
    try:
        config = build_config(config_class, body, where=f"{where}: stages.{name}")
    except ConfigError as exc:  # a config class's own check (__post_init__) does not know the recipe
        if str(exc).startswith(where):
            raise
        raise ConfigError(f"{where}: stages.{name}: {exc}") from exc
    launch = None
    if spec.training:
        launch = _launch_config(recipe_launch, stage_launch, f"{where}: stages.{name}")
    elif stage_launch:
        raise ConfigError(f"{where}: stages.{name}.launch: only training stages are launched (sft_train, vla_train)")
    output = spec.output(config)
    return PlannedStage(
        name, kind_name, config, spec, launch, [str(a) for a in after], _norm(output) if output else None,
        spec.inputs(config),
    )  # fmt: skip


def _writers(value: str, outputs: dict[str, str], own: str) -> list[str]:
    """Stages writing what `value` names: those whose output holds it (or is it); else those writing inside it."""
    holders = [n for out, n in outputs.items() if n != own and _inside(value, out)]
    if holders:
        return holders
    return [n for out, n in outputs.items() if n != own and _inside(out, value)]


def _link(plan: Plan, where: str) -> None:
    """Which stage writes (or puts in the HF cache) what each stage reads, and the stage order: the recipe's,
    except that a stage runs after every stage it reads from (a profile may add e.g. a fixture stage last)."""
    outputs: dict[str, str] = {}
    provided: dict[str, str] = {}
    names = [s.name for s in plan.stages]
    for stage in plan.stages:
        if stage.output:
            clash = next((n for out, n in outputs.items() if out == stage.output), None)
            if clash:
                raise ConfigError(f"{where}: stages {clash} and {stage.name} both write {stage.output}")
            outputs[stage.output] = stage.name
        for repo_id in stage.spec.provides(stage.config):
            provided.setdefault(repo_id, stage.name)
    by_name = {s.name: s for s in plan.stages}
    for stage in plan.stages:
        for ref in stage.refs:
            if not ref.value:
                continue
            if ref.model and ref.value in provided and not os.path.exists(ref.value):
                stage.produced_by[ref.field] = [provided[ref.value]]
                continue
            writers = _writers(_norm(ref.value), outputs, stage.name)
            if writers:
                stage.produced_by[ref.field] = writers
        for name in stage.after:
            if name not in by_name or name == stage.name:
                raise ConfigError(f"{where}: stages.{stage.name}.after: {name!r} is not another stage")
    order: list[str] = []
    pending = list(names)
    while pending:  # stable topological order: the first stage whose upstream stages have all been placed
        ready = next((n for n in pending if _upstream(by_name[n]) <= set(order)), None)
        if ready is None:
            raise ConfigError(f"{where}: stages {', '.join(pending)} read each other's outputs in a cycle")
        order.append(ready)
        pending.remove(ready)
    plan.stages = [by_name[n] for n in order]
    for stage in plan.stages:
        ups = _upstream(stage)
        stage.deps = [n for n in order if n in ups]
        stage.upstream_outputs = {n: out for out, n in outputs.items() if n in ups}


def _upstream(stage: PlannedStage) -> set[str]:
    return {n for ns in stage.produced_by.values() for n in ns} | set(stage.after)


def _offline(env: Mapping[str, str]) -> bool:
    return env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _input_problems(plan: Plan, where: str) -> tuple[list[str], list[str]]:
    """Inputs that no earlier stage writes and that are not there (missing paths, models in no cache while
    offline), and models that a run will have to download."""
    env = plan.effective_env()
    problems: list[str] = []
    notes: list[str] = []
    for stage in plan.stages:
        for ref in stage.refs:
            at = f"{where}: stages.{stage.name}.{ref.field}"
            if ref.field in stage.produced_by:
                continue
            if not ref.value:
                problems.append(f"{at}: is empty")
            elif os.path.exists(ref.value):
                continue
            elif ref.model and HUB_ID.match(ref.value):
                revision = getattr(getattr(stage.config, "model", None), "revision", None) or getattr(
                    stage.config, "revision", None
                )
                if cached_model(ref.value, env, revision):
                    continue
                if _offline(env):
                    problems.append(
                        f"{at}: {ref.value}: not in the HF cache at {hub_cache(env)} and HF_HUB_OFFLINE is set"
                    )
                else:
                    notes.append(f"{at}: {ref.value}: not in the HF cache at {hub_cache(env)}; it will be downloaded")
            else:
                problems.append(f"{at}: {ref.value}: no such file or folder (and no earlier stage writes it)")
    return problems, notes


# --------------------------------------------------------------------------------------------- decisions
@dataclass
class Decision:
    """What the runner does with a stage: cached, run, resume, replace (--force), skip or blocked, and why."""

    action: str
    reason: str = ""
    fingerprint: str | None = None
    payload: dict[str, Any] | None = None


def record_path(plan: Plan, stage: PlannedStage) -> Path:
    """`recipe_stage.json` in the stage's output folder, or in the state folder for stages that write none."""
    if stage.output:
        return Path(stage.output) / RECORD_NAME
    return plan.state_dir / "stages" / f"{stage.name}.json"


def stage_log_path(plan: Plan, stage: PlannedStage) -> Path:
    """Where a stage's own console output goes (without --verbose): `.recipe/logs/STAGE.log` of the run."""
    return plan.state_dir / "logs" / f"{stage.name}.log"


def _open_log(path: Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("w", encoding="utf-8", buffering=1)


def marker_path(plan: Plan, stage: PlannedStage) -> Path:
    """The started-but-unfinished marker of a stage: beside its output folder (so another recipe sharing that
    output, e.g. a baseline run, resumes it too), or in the state folder for stages that write none."""
    if stage.output:
        out = Path(stage.output)
        return out.parent / f".{out.name}.recipe-running.json"
    return plan.state_dir / "running" / f"{stage.name}.json"


def _payload(stage: PlannedStage, tokens: Mapping[str, str], env: Mapping[str, str]) -> dict[str, Any] | None:
    """What the fingerprint hashes; None while an upstream stage has not finished (its run id is unknown).
    A model another stage puts into the HF cache counts by its snapshot there (tiny models and downloads are
    content-addressed), so recipes sharing the cache share everything trained from it."""
    config = config_to_dict(stage.config)
    if stage.spec.output_field:
        set_path(config, stage.spec.output_field, None, delete=True)
    for dotted in stage.spec.execution_only:
        set_path(config, dotted, None, delete=True)
    inputs: dict[str, str] = {}
    for ref in stage.refs:
        upstream = stage.produced_by.get(ref.field)
        hub = ref.model and not os.path.exists(ref.value) and bool(HUB_ID.match(ref.value))
        if upstream is not None and hub:
            snapshot = cached_revision(ref.value, env)
            if snapshot is None:
                return None
            value = f"hub {ref.value}@{snapshot}"
        elif upstream is not None:
            if any(u not in tokens for u in upstream):
                return None
            value = " ".join(f"stage {u} {tokens[u]}" for u in upstream)
            if len(upstream) == 1 and stage.upstream_outputs.get(upstream[0]):
                inside = os.path.relpath(_norm(ref.value), stage.upstream_outputs[upstream[0]])
                value += "" if inside == "." or inside.startswith("..") else f" {inside}"
        elif ref.model and not os.path.exists(ref.value):
            value = f"hub {ref.value}"
        else:
            value = f"data {outside_fingerprint(ref.value)}"
        inputs[ref.field] = value
        set_path(config, ref.field, {"input": value})
    for name in stage.after:
        if name not in tokens:
            return None
        inputs[f"after.{name}"] = tokens[name]
    config = strip_keys(config, EXECUTION_ONLY)
    return {"kind": stage.kind, "version": package_version(), "config": config, "inputs": inputs}


def _nonempty(path: str | None) -> bool:
    return bool(path) and os.path.isdir(str(path)) and any(os.scandir(str(path)))


def _mismatch(record: StageRecord | None, payload: dict[str, Any] | None) -> str:
    if record is None:
        return "no record of this runner in it"
    if payload is None:
        return "an upstream stage runs first"
    changed = differences(record.config, payload["config"])
    if record.version != payload["version"]:
        changed.append(f"package version {record.version} -> {payload['version']}")
    changed += [f"input {k}" for k in differences(record.inputs, payload["inputs"]) if k not in changed]
    return "changed: " + ", ".join(changed[:6]) if changed else "another fingerprint"


def decide(plan: Plan, stage: PlannedStage, tokens: Mapping[str, str], forced: set[str]) -> Decision:
    """Cached, resume, run, replace or blocked, from the stage's record, marker, output and fingerprint."""
    env = plan.effective_env()
    payload = _payload(stage, tokens, env)
    fingerprint = digest(payload) if payload is not None else None
    record = StageRecord.read(record_path(plan, stage))
    complete = stage.spec.complete(stage.config, env) if stage.spec.complete else record is not None
    provides = bool(stage.spec.provides(stage.config)) and stage.output is None
    if provides and complete and stage.name not in forced and (record is None or record.fingerprint == fingerprint):
        return Decision("cached", "in the HF cache", fingerprint, payload)  # another recipe may have put it there
    if stage.name in forced:
        return Decision("replace" if _nonempty(stage.output) or record else "run", "--force", fingerprint, payload)
    if record is not None and fingerprint is not None and record.fingerprint == fingerprint and complete:
        return Decision("cached", "", fingerprint, payload)
    if stage.output is None or not _nonempty(stage.output):
        why = "no output yet" if stage.output else ("not run yet" if record is None else _mismatch(record, payload))
        return Decision("run", why, fingerprint, payload)
    if stage.kind == "report":  # a report is a view of results: regenerated, never an artefact to protect
        return Decision("run", _mismatch(record, payload) if record else "no record", fingerprint, payload)
    marker = Marker.read(marker_path(plan, stage))
    mine = marker is not None and fingerprint is not None and marker.fingerprint == fingerprint
    if complete and mine:  # this runner finished it, then was killed before writing its record
        why = "finished but not recorded (interrupted before its record)"
        if stage.spec.resume == "native" or stage.launch is not None:  # evaluations and trainings: cheap reruns
            return Decision("resume", why, fingerprint, payload)
        return Decision("replace", f"{why}; its own output, made again", fingerprint, payload)
    if complete:
        return Decision(
            "blocked", f"{stage.output} holds a finished result ({_mismatch(record, payload)})", fingerprint, payload
        )
    own = mine or (record is not None and record.fingerprint == fingerprint and fingerprint is not None)
    if own:
        return Decision("resume", "unfinished, same fingerprint", fingerprint, payload)
    why = "another configuration" if marker is not None else "written outside this runner"
    return Decision("blocked", f"{stage.output} holds an unfinished result of {why}", fingerprint, payload)


def downstream(plan: Plan, names: set[str]) -> set[str]:
    """`names` and every stage that depends on them, transitively."""
    out = set(names)
    for stage in plan.stages:
        if out & set(stage.deps):
            out.add(stage.name)
    return out


def _selected(plan: Plan, only: list[str] | None, start: str | None) -> list[str]:
    names = [s.name for s in plan.stages]
    for name in [*(only or []), *([start] if start else [])]:
        if name not in names:
            raise ConfigError(f"{plan.path}: stage {name!r} not in this recipe (stages: {', '.join(names)})")
    chosen = names[names.index(start) :] if start else names
    return [n for n in chosen if not only or n in only]


def simulate(plan: Plan, selected: list[str], forced: set[str]) -> list[tuple[PlannedStage, Decision]]:
    """Every stage's decision before anything runs (a stage after one that runs gets a fresh fingerprint)."""
    tokens: dict[str, str] = {}
    out = []
    for stage in plan.stages:
        if stage.name not in selected:
            record = StageRecord.read(record_path(plan, stage))
            if record is not None:
                tokens[stage.name] = record.token()
            out.append((stage, Decision("skip", "not selected")))
            continue
        decision = decide(plan, stage, tokens, forced)
        if decision.action == "cached":
            record = StageRecord.read(record_path(plan, stage))
            tokens[stage.name] = record.token() if record else "in-cache"
        elif decision.action == "skip":
            pass
        out.append((stage, decision))
    return out


# ------------------------------------------------------------------------------------------- execution
def safe_delete(path: Path) -> None:
    """Delete a stage's output folder for --force, refusing the filesystem root, home, the working folder,
    any folder above it and the project itself."""
    target = path.resolve()
    protected = {Path("/"), Path.home().resolve(), Path.cwd().resolve(), RECIPES_DIR.parent}
    protected |= set(Path.cwd().resolve().parents)
    if target in protected or RECIPES_DIR.is_relative_to(target):
        raise ConfigError(f"{path}: refusing to delete this folder for --force (it holds more than one stage's output)")
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()


def _prepare(stage: PlannedStage, decision: Decision) -> Any:
    """The config the stage runs with: resume flags, or replacing its own unfinished output."""
    config = copy.deepcopy(stage.config)
    if stage.spec.resume == "flag" and hasattr(config, "resume"):
        config.resume = True
    elif decision.action == "resume" and stage.spec.resume != "native" and stage.output:
        if hasattr(config, "overwrite"):
            config.overwrite = True  # its own unfinished output (the marker says so): start it again
        else:
            safe_delete(Path(stage.output))
    return config


def _execute(plan: Plan, stage: PlannedStage, config: Any, verbose: bool, log: TextIO | None = None) -> Any:
    """Run the stage: in this process, or as a child under its launch block for training stages. `log`: where the
    stage's own printing (stdout: tables, training log lines) goes instead of the console."""
    if stage.launch is None or stage.launch.launcher == "inline":
        if log is None:
            return stage.spec.run_function()(config)
        with contextlib.redirect_stdout(log):
            return stage.spec.run_function()(config)
    work = plan.state_dir / "launch" / stage.name
    work.mkdir(parents=True, exist_ok=True)
    config_json, result_json = work / "config.json", work / "result.json"
    error_file = result_json.with_name(result_json.name + ERROR_SUFFIX)
    for stale in (result_json, error_file):
        stale.unlink(missing_ok=True)
    write_json(config_json, config_to_dict(config))
    command = launch_command(stage.launch, stage.spec.config, stage.spec.run, config_json, result_json)
    print(f"{PREFIX} {stage.name}: {describe(stage.launch)}", file=log or sys.stdout, flush=True)
    if verbose:
        print(f"{PREFIX} {stage.name}: {' '.join(command)}", flush=True)
    import subprocess

    code = subprocess.call(command, env=_child_env(), stdout=log)
    if code != 0:
        message = error_file.read_text(encoding="utf-8").strip() if error_file.is_file() else ""
        raise ToolkitError(message or f"stage {stage.name}: the launched process exited with status {code}")
    if not result_json.is_file():
        raise ToolkitError(f"stage {stage.name}: the launched process wrote no result ({result_json})")
    return json.loads(result_json.read_text(encoding="utf-8"))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run_plan(
    plan: Plan,
    selected: list[str],
    forced: set[str],
    verbose: bool = False,
) -> int:
    """Run the selected stages in order (checks first: inputs, blocked outputs, launchers); 0 on success."""
    decisions = simulate(plan, selected, forced)
    for stage, decision in decisions:
        if decision.action == "blocked":
            raise ConfigError(f"stage {stage.name}: {decision.reason}; rerun with --force {stage.name} to replace it")
    upstream_missing = _missing_upstream(plan, decisions)
    if upstream_missing:
        raise ConfigError(upstream_missing)
    if plan.problems:
        raise ConfigError(plan.problems[0])
    _check_hub_reachable(plan, decisions)
    for stage, decision in decisions:
        if stage.launch is not None and decision.action not in ("cached", "skip"):
            why = launcher_available(stage.launch)
            if why:
                raise ConfigError(f"stage {stage.name}: {why}")
    followers = [s for s, d in decisions if s.launch is not None and s.launch.rank() > 0 and d.action != "skip"]
    if followers:
        return _run_follower(plan, decisions)
    os.environ.update(plan.env)
    if not verbose:
        quiet_third_party()  # before any stage imports transformers; launched stages inherit the environment
    total = len(plan.stages)
    with state_lock(plan.state_dir):
        tokens: dict[str, str] = {}
        for index, stage in enumerate(plan.stages, 1):
            head = f"{PREFIX} {index}/{total} {stage.name}"
            path = record_path(plan, stage)
            if stage.name not in selected:
                record = StageRecord.read(path)
                if record is not None:
                    tokens[stage.name] = record.token()
                print(f"{head}: skipped (not selected)", flush=True)
                continue
            decision = decide(plan, stage, tokens, forced)
            if decision.action == "cached":
                record = StageRecord.read(path)
                tokens[stage.name] = record.token() if record else "in-cache"
                stale = marker_path(plan, stage)  # left by a kill between the record and the marker's removal
                if (left := Marker.read(stale)) is not None and left.fingerprint == decision.fingerprint:
                    stale.unlink()
                print(f"{head}: cached", flush=True)
                continue
            if decision.action == "blocked":
                raise ConfigError(
                    f"stage {stage.name}: {decision.reason}; rerun with --force {stage.name} to replace it"
                )
            if decision.payload is None or decision.fingerprint is None:
                raise ConfigError(f"stage {stage.name}: an upstream stage did not finish")
            if decision.action == "replace" and stage.output and os.path.exists(stage.output):
                safe_delete(Path(stage.output))
            path.unlink(missing_ok=True)
            what = {"run": "running", "resume": "resuming", "replace": "replacing"}[decision.action]
            print(f"{head} ({stage.kind}): {what}" + (f" ({decision.reason})" if decision.reason else ""), flush=True)
            marker = marker_path(plan, stage)
            write_json(marker, Marker(stage.name, decision.fingerprint, stage.output).__dict__)
            config = _prepare(stage, decision)
            faults.hit("recipe.stage_started")
            started = time.time()
            log_file = stage_log_path(plan, stage)
            with contextlib.ExitStack() as stack:
                log = None if verbose else stack.enter_context(_open_log(log_file))
                try:
                    result = _execute(plan, stage, config, verbose, log)
                except BaseException:
                    if log is not None and log.tell():
                        print(f"{head}: failed; what it printed: {log_file}", file=sys.stderr, flush=True)
                    raise
            seconds = time.time() - started
            faults.hit("recipe.stage_ran")
            record = StageRecord(
                stage=stage.name,
                kind=stage.kind,
                fingerprint=decision.fingerprint,
                version=decision.payload["version"],
                config=decision.payload["config"],
                inputs=decision.payload["inputs"],
                started_at=started,
                finished_at=time.time(),
                seconds=round(seconds, 3),
                result=_jsonable(result),
            )
            record.write(path)
            faults.hit("recipe.stage_recorded")
            marker.unlink(missing_ok=True)
            tokens[stage.name] = record.token()
            summary = stage.spec.summary(result)
            print(f"{head}: {summary} in {_duration(seconds)} (full result: {path})", flush=True)
            if verbose:
                print(json.dumps(result, indent=2, default=str), flush=True)
    return 0


def _run_follower(plan: Plan, decisions: list[tuple[PlannedStage, Decision]]) -> int:
    """On machine_rank > 0 of a multi-node launch: start this node's share of each selected training stage."""
    for stage, decision in decisions:
        if decision.action != "skip" and stage.launch is None:
            raise ConfigError(f"stage {stage.name}: on machine_rank > 0 only training stages run (use --only)")
    os.environ.update(plan.env)
    for stage, decision in decisions:
        if decision.action == "skip":
            continue
        assert stage.launch is not None
        if decision.action == "cached":
            print(f"{PREFIX} {stage.name}: cached", flush=True)
            continue
        print(f"{PREFIX} {stage.name}: joining as machine {stage.launch.rank()}", flush=True)
        _execute_follower(plan, stage, decision)
    return 0


def _execute_follower(plan: Plan, stage: PlannedStage, decision: Decision) -> None:
    import subprocess
    import tempfile

    assert stage.launch is not None
    with tempfile.TemporaryDirectory(prefix="recipe-follower-") as work:
        config_json, result_json = Path(work) / "config.json", Path(work) / "result.json"
        write_json(config_json, config_to_dict(_prepare(stage, Decision("run"))))
        command = launch_command(stage.launch, stage.spec.config, stage.spec.run, config_json, result_json)
        code = subprocess.call(command, env=_child_env())
    if code != 0:
        raise ToolkitError(f"stage {stage.name}: the launched process exited with status {code}")


def _child_env() -> dict[str, str]:
    """The environment of a launched stage: the project root first on PYTHONPATH, whatever the cwd."""
    paths = [str(RECIPES_DIR.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _missing_upstream(plan: Plan, decisions: list[tuple[PlannedStage, Decision]]) -> str | None:
    """A selected stage that reads the output of an unselected stage that has not finished."""
    action = {s.name: d.action for s, d in decisions}
    for stage, decision in decisions:
        if decision.action == "skip":
            continue
        for dep in stage.deps:
            if action[dep] == "skip" and StageRecord.read(record_path(plan, plan.stage(dep))) is None:
                return (
                    f"stage {stage.name} needs {dep}, which has not finished (no {RECORD_NAME}); "
                    f"run {dep} first or leave out --only/--from"
                )
    return None


def _check_hub_reachable(plan: Plan, decisions: list[tuple[PlannedStage, Decision]]) -> None:
    """Models no stage provides and no cache holds must be reachable on the Hub (checked before any stage runs)."""
    env = plan.effective_env()
    running = {s.name for s, d in decisions if d.action not in ("cached", "skip")}
    for stage in plan.stages:
        if stage.name not in running:
            continue
        for ref in stage.refs:
            if not ref.model or ref.field in stage.produced_by or os.path.exists(ref.value):
                continue
            if not HUB_ID.match(ref.value) or cached_model(ref.value, env):
                continue
            where = f"{plan.path}: stages.{stage.name}.{ref.field}: {ref.value}"
            if _offline(env):
                raise ConfigError(f"{where}: not in the HF cache at {hub_cache(env)} and HF_HUB_OFFLINE is set")
            try:
                from huggingface_hub import HfApi

                HfApi(endpoint=env.get("HF_ENDPOINT") or None).model_info(ref.value, timeout=15)
            except Exception as exc:  # offline, 404, gated: all mean the stage could not load it
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ConfigError(
                    f"{where}: not in the HF cache at {hub_cache(env)} and not reachable ({first})"
                ) from exc


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------------------------- dry run
def dry_run(plan: Plan, selected: list[str], forced: set[str]) -> str:
    """The resolved plan: environment, launch, each stage's decision, input problems and the full configs."""
    lines = [f"# recipe {plan.path} (profile {plan.profile}): {len(plan.stages)} stages, state in {plan.state_dir}"]
    if plan.description:
        lines.append(f"# {plan.description}")
    lines.append("env:" if plan.env else "env: {}")
    lines += [f"  {k}: {v}" for k, v in plan.env.items()]
    lines.append("stages:")
    running: set[str] = set()
    width = max(len(f"{s.name} ({s.kind})") for s in plan.stages)
    for stage, decision in simulate(plan, selected, forced):
        action = decision.action
        why = decision.reason
        if action in ("run", "replace", "resume"):
            running.add(stage.name)
        if action == "run" and decision.payload is None:
            ups = [d for d in stage.deps if d in running]
            why = f"after {', '.join(ups)}" if ups else why
        extra = f"; {describe(stage.launch)}" if stage.launch is not None and action != "skip" else ""
        lines.append(f"  {stage.name + ' (' + stage.kind + ')':<{width}}  {action:<8} {why}{extra}".rstrip())
    if plan.problems:
        lines.append("problems (a run stops at the first, before any stage):")
        lines += [f"  {p}" for p in plan.problems]
    if plan.notes:
        lines.append("notes:")
        lines += [f"  {n}" for n in plan.notes]
    doc = {
        s.name: {
            "uses": s.kind,
            **({"launch": config_to_dict(s.launch)} if s.launch else {}),
            **config_to_dict(s.config),
        }
        for s in plan.stages
    }
    lines.append("---")
    lines.append(yaml.safe_dump(doc, sort_keys=False).rstrip())
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------- CLI
USAGE_EXAMPLES = """\
examples:
  bash recipes/run.sh demo                                    # the whole chain on CPU in minutes
  bash recipes/run.sh fast_tokens_unfreeze_vision bridge=/data/bridge_dataset/1.0.0
  bash recipes/run.sh vla_benchmark backbone=Qwen/Qwen3-VL-4B-Instruct benchmark=libero_10
  bash recipes/run.sh aux_robopoint profile=tiny              # any recipe on tiny models and fixture data
  bash recipes/run.sh demo --dry-run vla.steps=40             # the resolved plan, nothing runs
  bash recipes/run.sh fast_tokens_unfreeze_vision --force sft # replace a finished stage (and what follows)

overrides (before validation; unknown keys are errors):
  VAR=VALUE            a var of the recipe (vars.VAR), e.g. run_dir=/scratch/me/run1
  STAGE.KEY=VALUE      a stage's config key, e.g. vla.steps=1000 sft.trainer.learning_rate=1e-5
  launch.KEY=VALUE     how training stages start: launch.num_processes=4 launch.config=recipes/accelerate/zero2.yaml
  env.KEY=VALUE        an environment variable for the stages
  profile=NAME         a profile of the recipe (tiny: tiny models, fixture data, the demo sim)

A finished stage is cached (its fingerprint is in STAGE_OUTPUT/recipe_stage.json); an interrupted one
resumes; a finished output with another fingerprint is only replaced with --force STAGE.
"""


def build_parser() -> argparse.ArgumentParser:
    """The command line of `recipes/run.sh`."""
    names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    parser = argparse.ArgumentParser(
        prog="recipes/run.sh",
        usage="%(prog)s NAME [VAR=VALUE | STAGE.KEY=VALUE ...] [--dry-run] [--from STAGE] [--only STAGE] "
        "[--force STAGE] [--verbose]",
        description="Run the stages of recipes/NAME.yaml in order: finished stages are cached, interrupted ones "
        "resume, training stages launch on every visible GPU.",
        epilog=USAGE_EXAMPLES + "\nrecipes: " + ", ".join(names),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", help="recipe name (recipes/NAME.yaml) or a path to a YAML file")
    parser.add_argument("overrides", nargs="*", metavar="VAR=VALUE", help="overrides (see below)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the resolved plan and what is cached; run nothing"
    )
    parser.add_argument(
        "--from", dest="start", metavar="STAGE", help="start at STAGE (earlier stages must be finished)"
    )
    parser.add_argument(
        "--only", "--stage", dest="only", action="append", metavar="STAGE", help="run only STAGE (repeatable)"
    )
    parser.add_argument(
        "--force", action="append", default=[], metavar="STAGE", help="re-run STAGE and every stage after it that "
        "reads its output, replacing finished outputs ('all' for every stage; repeatable)",
    )  # fmt: skip
    parser.add_argument("--profile", default=None, help="same as profile=NAME")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print what each stage prints (tables, training log lines), its full JSON result and commands "
        "(otherwise these go to .recipe/logs/STAGE.log and the result file)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `recipes/run.sh`."""
    args = build_parser().parse_intermixed_args(argv)
    path = recipe_path(args.name)
    try:
        plan = make_plan(path, args.overrides, profile=args.profile)
        selected = _selected(plan, args.only, args.start)
        names = {s.name for s in plan.stages}
        forced_named = set(args.force)
        if "all" in forced_named:
            forced_named = set(selected)
        unknown = forced_named - names
        if unknown:
            raise ConfigError(f"{path}: --force {sorted(unknown)}: not a stage of this recipe")
        forced = downstream(plan, forced_named) & set(selected)
        if args.dry_run:
            print(dry_run(plan, selected, forced), end="")
            return 0
        return run_plan(plan, selected, forced, verbose=args.verbose)
    except (ToolkitError, DataError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
