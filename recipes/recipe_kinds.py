"""Every recipe stage kind in one table: its config and run function, where it writes, what it reads, what
"complete" means, how it resumes, and the one line that summarises its result.

The runner needs these facts to cache, resume and order stages; they live here, once. Config classes and run
functions are "module:attribute" strings loaded on demand, so planning imports no model or simulator code.
"Complete" is decided from files alone: a corpus has its `dataset_card.json` (written last), an SFT run its
`final/` checkpoint, a VLA run its last checkpoint plus `train_summary.json` at the configured step count, an
evaluation a `summary.json` marked complete, a sweep every checkpoint x chunk mode in `sweep.json`.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Env = Mapping[str, str]


@dataclass(frozen=True)
class Ref:
    """A path or model a stage reads: the dotted config field that names it and its value."""

    field: str
    value: str
    model: bool = False  # a model: a checkpoint folder or a Hub id (through the HF cache)


def _none(cfg: Any) -> str | None:
    return None


def _no_refs(cfg: Any) -> list[Ref]:
    return []


def _no_ids(cfg: Any) -> list[str]:
    return []


def _generic_summary(result: Any) -> str:
    if isinstance(result, dict):
        parts = [f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in result.items() if _scalar(v)]
        return ", ".join(parts[:4])
    if isinstance(result, list):
        return f"{len(result)} item(s)"
    return "" if result is None else str(result)[:120]


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float | str) and not isinstance(value, bool) and len(str(value)) < 60


@dataclass(frozen=True)
class StageKind:
    """One stage kind. `output` is the folder it writes (its record goes there), `output_field` the config field
    naming it; `resume` is "flag" (the config's `resume` is set), "native" (a rerun continues on its own) or
    "restart" (an own unfinished output is replaced); `training` stages start through `launch:`."""

    config: str
    run: str
    help: str
    output: Callable[[Any], str | None] = _none
    output_field: str | None = None
    inputs: Callable[[Any], list[Ref]] = _no_refs
    complete: Callable[[Any, Env], bool] | None = None  # None: complete when its record says so (no output)
    resume: str = "restart"
    training: bool = False
    workers: tuple[str, ...] = ()  # fields that take `auto` (= this machine's cores)
    provides: Callable[[Any], list[str]] = _no_ids  # Hub ids the stage puts into the HF cache
    summary: Callable[[Any], str] = _generic_summary
    execution_only: tuple[str, ...] = ()  # fields (dotted) that do not change the result

    def config_class(self) -> Any:
        """The dataclass a stage body maps onto."""
        return _load(self.config)

    def run_function(self) -> Callable[[Any], Any]:
        """The function that runs the stage on its config."""
        function: Callable[[Any], Any] = _load(self.run)
        return function


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


# Fields that never change a stage's result: how many processes do the work, logging, progress, and the
# flags the runner itself sets. Left out of every fingerprint.
EXECUTION_ONLY = frozenset(
    {"workers", "num_workers", "dataloader_num_workers", "progress", "overwrite", "resume", "log_every",
     "logging_steps", "report_to", "verbose"}
)  # fmt: skip


# ------------------------------------------------------------------------------------------ completion tests
def _file(*parts: str) -> Callable[[Any, Env], bool]:
    """Complete when `<output>/<parts>` exists."""

    def check(cfg: Any, env: Env, _parts: tuple[str, ...] = parts) -> bool:
        out = _output_of(cfg)
        return out is not None and Path(out, *_parts).is_file()

    return check


def _output_of(cfg: Any) -> str | None:
    for name in ("out", "output_dir"):
        value = getattr(cfg, name, None)
        if value:
            return str(value)
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _vla_complete(cfg: Any, env: Env) -> bool:
    """`train_summary.json` (written after the last step) and the checkpoint of its last step, at the configured
    step count (or any count when the schedule is in epochs, which fix the steps at start)."""
    out = Path(cfg.out)
    summary = _read_json(out / "train_summary.json")
    if not isinstance(summary, dict) or not isinstance(summary.get("steps"), int):
        return False
    steps = int(summary["steps"])
    in_epochs = float(getattr(cfg, "epochs", 0) or 0) > 0
    return (in_epochs or steps == int(cfg.steps)) and (out / f"checkpoint-{steps:06d}").is_dir()


def _sft_complete(cfg: Any, env: Env) -> bool:
    """`final/` (written atomically after the last step) holds a model."""
    return Path(cfg.output_dir, "final", "config.json").is_file()


def _evaluate_complete(cfg: Any, env: Env) -> bool:
    summary = _read_json(Path(cfg.out) / "summary.json")
    return isinstance(summary, dict) and summary.get("complete") is True


_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def sweep_out(cfg: Any) -> str:
    """A sweep's results folder (default RUN/eval-SIM, as `evaluation sweep` picks it)."""
    return str(cfg.out) if cfg.out else str(Path(cfg.run) / f"eval-{cfg.sim}")


def _sweep_complete(cfg: Any, env: Env) -> bool:
    """Every checkpoint of the run x every chunk mode has a result in sweep.json."""
    record = _read_json(Path(sweep_out(cfg)) / "sweep.json")
    run = Path(cfg.run)
    if not isinstance(record, dict) or not run.is_dir():
        return False
    checkpoints = [p for p in run.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)]
    wanted = max(1, len(checkpoints)) * len(cfg.chunk_modes)
    return len(record.get("results", [])) >= wanted


def hub_cache(env: Env) -> Path:
    """The hub cache huggingface_hub reads under `env` (HF_HUB_CACHE, HF_HOME/hub, XDG, ~/.cache)."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]) / "hub"
    xdg = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "huggingface" / "hub"


def cached_revision(repo_id: str, env: Env, revision: str | None = None) -> str | None:
    """The snapshot hash `repo_id` (at `revision`, default main) resolves to in the hub cache, or None."""
    repo = hub_cache(env) / ("models--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / (revision or "main")
    snapshot = ref.read_text(encoding="utf-8").strip() if ref.is_file() else (revision or "")
    return snapshot if snapshot and (repo / "snapshots" / snapshot / "config.json").is_file() else None


def cached_model(repo_id: str, env: Env, revision: str | None = None) -> bool:
    """Whether `repo_id` (at `revision`, default main) has a snapshot with a config in the hub cache."""
    return cached_revision(repo_id, env, revision) is not None


def _tiny_ids(cfg: Any) -> list[str]:
    if cfg.ids is not None:
        return list(cfg.ids)
    from datasets_build.vlm_families import PAPER_BACKBONES  # all nine (imports transformers: only when needed)

    return list(PAPER_BACKBONES)


def _tiny_env(cfg: Any, env: Env) -> Env:
    return {**env, "HF_HOME": cfg.hf_home, "HF_HUB_CACHE": ""} if cfg.hf_home else env


def _tiny_complete(cfg: Any, env: Env) -> bool:
    home = _tiny_env(cfg, env)
    return all(cached_model(i, home) for i in _tiny_ids(cfg))


def _download_complete(cfg: Any, env: Env) -> bool:
    return cached_model(cfg.repo_id, env, cfg.revision)


# ------------------------------------------------------------------------------------------------- inputs
def _policy_refs(value: str, name: str = "policy") -> list[Ref]:
    if not value or value == "zero" or value.startswith("replay:"):
        return [Ref(name, value.removeprefix("replay:"))] if value.startswith("replay:") else []
    return [Ref(name, value, model=True)]


def _build_inputs(cfg: Any) -> list[Ref]:
    refs = [Ref("input", cfg.input)]
    tokenizer = (cfg.options or {}).get("tokenizer")
    if isinstance(tokenizer, str) and tokenizer:
        refs.append(Ref("options.tokenizer", tokenizer))
    return refs


def _sft_inputs(cfg: Any) -> list[Ref]:
    refs = [Ref("model", cfg.model, model=True)]
    refs += [Ref(f"data.{i}.path", d.path) for i, d in enumerate(cfg.data)]
    if cfg.fast.tokenizer:
        refs.append(Ref("fast.tokenizer", cfg.fast.tokenizer))
    return refs


def _vla_inputs(cfg: Any) -> list[Ref]:
    refs = [Ref("model.backbone", cfg.model.backbone, model=True), Ref("data.path", cfg.data.path)]
    if cfg.data.stats:
        refs.append(Ref("data.stats", cfg.data.stats))
    return refs


def _report_inputs(cfg: Any) -> list[Ref]:
    refs = [Ref(f"results.{i}", spec.rpartition("=")[2]) for i, spec in enumerate(cfg.results)]
    if cfg.capability:
        refs.append(Ref("capability", cfg.capability))
    return refs


def _import_inputs(cfg: Any) -> list[Ref]:
    refs = [] if cfg.format == "hf-dataset" else [Ref("input", cfg.input)]
    refs += [Ref(name, getattr(cfg, name)) for name in ("image_root", "video_root") if getattr(cfg, name, None)]
    return refs


# ---------------------------------------------------------------------------------------------- summaries
def _count(n: Any, what: str) -> str:
    return f"{int(n):,} {what}" if isinstance(n, int | float) else f"? {what}"


def _build_summary(r: dict[str, Any]) -> str:
    return f"{_count(r.get('samples'), 'samples')} in {_count(r.get('shards'), 'shard(s)')} from " + _count(
        r.get("episodes"), "episodes"
    )


def _mix_summary(r: dict[str, Any]) -> str:
    parts = r.get("per_input") or {}
    inputs = ", ".join(f"{k} {v:,}" for k, v in parts.items()) if isinstance(parts, dict) else ""
    return f"{_count(r.get('samples'), 'samples')} in {_count(r.get('shards'), 'shard(s)')}" + (
        f" ({inputs})" if inputs else ""
    )


def _import_summary(r: dict[str, Any]) -> str:
    skipped = sum(int(v) for v in (r.get("skipped") or {}).values())
    return f"{_count(r.get('samples'), 'samples')} imported" + (f", {skipped:,} records skipped" if skipped else "")


def _verify_summary(r: dict[str, Any]) -> str:
    return f"{_count(r.get('samples'), 'samples')} checked, {r.get('errors')} errors, {r.get('unverified')} unverified"


def _sft_summary(r: dict[str, Any]) -> str:
    loss = (r.get("metrics") or {}).get("final_loss")
    return f"{r.get('checkpoint')} after {_count(r.get('steps'), 'steps')}" + (
        f", final loss {loss:.4f}" if isinstance(loss, float) else ""
    )


def _vla_summary(r: dict[str, Any]) -> str:
    loss = (r.get("last") or {}).get("loss")
    return (
        f"{_count(r.get('steps'), 'steps')} on {r.get('world_size', 1)} process(es), "
        f"{_count(len(r.get('checkpoints', [])), 'checkpoints')}" + (f", loss {loss:.4f}" if loss is not None else "")
    )


def _eval_summary(r: dict[str, Any]) -> str:
    metrics = r.get("metrics") or {}
    if r.get("metric") == "chain":
        return f"avg. length {metrics.get('avg_len', metrics.get('average_length', 0)):.3f} over " + _count(
            metrics.get("episodes", metrics.get("chains")), "chains"
        )
    rate = metrics.get("success_rate")
    rate_text = f"{100 * rate:.1f} %" if isinstance(rate, float) else "?"
    return f"success {rate_text} over {_count(metrics.get('episodes'), 'episodes')}"


def _sweep_summary(r: dict[str, Any]) -> str:
    best = r.get("best") or {}
    return (
        f"{_count(len(r.get('results', [])), 'settings')}; best {best.get('score')} "
        f"({best.get('checkpoint')}, chunk {best.get('chunk_mode')})"
    )


def _report_summary(r: Any) -> str:
    files = [Path(p).name for p in r] if isinstance(r, list) else []
    return f"{len(files)} files ({', '.join(files[:4])}{', ...' if len(files) > 4 else ''})"


def _demo_summary(r: dict[str, Any]) -> str:
    return (
        f"{_count(r.get('episodes'), 'episodes')} ({r.get('successes')} successful), {_count(r.get('steps'), 'steps')}"
    )


def _expert_summary(r: dict[str, Any]) -> str:
    return ", ".join(f"{t} {100 * float(v.get('success_rate', 0)):.0f} %" for t, v in sorted(r.items()))


def _fast_summary(r: dict[str, Any]) -> str:
    return (
        f"{_count(r.get('chunks'), 'chunks')} of horizon {r.get('horizon')}, vocabulary {r.get('vocab_size')}, "
        f"{r.get('tokens_per_chunk_mean', 0):.1f} tokens/chunk"
    )


def _tiny_summary(r: dict[str, Any]) -> str:
    return f"{len(r)} tiny model(s): {', '.join(sorted(r))}"


def _fixture_summary(r: dict[str, Any]) -> str:
    return f"{_count(r.get('episodes'), 'episodes')} as {r.get('format')} in {r.get('out')}"


# -------------------------------------------------------------------------------------------------- kinds
STAGE_KINDS: dict[str, StageKind] = {
    "demo_episodes": StageKind(
        "datasets_build.demo_episodes:DemoEpisodesConfig",
        "datasets_build.demo_episodes:record_demo_episodes",
        "record scripted-expert episodes of the demo sim (LeRobot v3.0 + geometry)",
        output=lambda c: c.out,
        output_field="out",
        complete=_file("meta", "info.json"),
        workers=("workers",),
        summary=_demo_summary,
    ),
    "expert_eval": StageKind(
        "datasets_build.sim.evaluate:ExpertEvalConfig",
        "datasets_build.sim.evaluate:evaluate_expert",
        "success rate of the demo sim's scripted expert per task family",
        workers=("workers",),
        summary=_expert_summary,
    ),
    "fixture_data": StageKind(
        "datasets_build.fixture_data:FixtureDataConfig",
        "datasets_build.fixture_data:write_fixture_data",
        "demo-sim episodes written in a source's own format (calvin, rlds, libero, lerobot): a recipe's tiny data",
        output=lambda c: c.out,
        output_field="out",
        complete=_file("fixture_data.json"),
        summary=_fixture_summary,
    ),
    "build": StageKind(
        "datasets_build.corpora.build:BuildConfig",
        "datasets_build.corpora.build:build_corpus",
        "build an auxiliary corpus (e.g. robo2vlm) from a robot dataset into shards",
        output=lambda c: c.out,
        output_field="out",
        inputs=_build_inputs,
        complete=_file("dataset_card.json"),
        resume="flag",
        workers=("workers",),
        summary=_build_summary,
    ),
    "merge_corpus": StageKind(
        "datasets_build.corpora.merge:MergeConfig",
        "datasets_build.corpora.merge:merge_corpus",
        "join the shard folders of a job-array corpus build into one folder with one card",
        output=lambda c: c.out,
        output_field="out",
        inputs=lambda c: [Ref(f"inputs.{i}", x) for i, x in enumerate(c.inputs) if not set("*?[") & set(x)],
        complete=_file("dataset_card.json"),
        summary=_build_summary,
    ),
    "import_corpus": StageKind(
        "datasets_build.corpora.importers.stage:ImportConfig",
        "datasets_build.corpora.importers.stage:import_corpus",
        "import a published corpus (robopoint, vica, robo2vlm, sharerobot, LLaVA json, HF dataset) into shards",
        output=lambda c: c.out,
        output_field="out",
        inputs=_import_inputs,
        complete=_file("dataset_card.json"),
        summary=_import_summary,
    ),
    "fit_fast": StageKind(
        "datasets_build.fast.fit:FitFastConfig",
        "datasets_build.fast.fit:fit_fast",
        "fit a FAST action tokenizer (DCT + BPE) on a source's action chunks",
        output=lambda c: c.out,
        output_field="out",
        inputs=lambda c: [Ref("input", c.input)] + ([Ref("stats", c.stats)] if c.stats else []),
        complete=_file("tokenizer.json"),
        summary=_fast_summary,
    ),
    "mix": StageKind(
        "datasets_build.corpora.mix:MixConfig",
        "datasets_build.corpora.mix:mix_shards",
        "interleave built corpora and general VQA into one shard set (e.g. vqa_mix)",
        output=lambda c: c.out,
        output_field="out",
        inputs=lambda c: [Ref(f"inputs.{i}.path", x.path) for i, x in enumerate(c.inputs)],
        complete=_file("dataset_card.json"),
        resume="flag",
        summary=_mix_summary,
    ),
    "verify": StageKind(
        "datasets_build.corpora.build:VerifyConfig",
        "datasets_build.corpora.build:run_verify",
        "re-check every answer of a built corpus against the facts in its meta",
        inputs=lambda c: [Ref("path", c.path)],
        summary=_verify_summary,
    ),
    "sft_train": StageKind(
        "sft.config:SFTTrainConfig",
        "sft.train:train",
        "post-train a Qwen-VL model on corpus shards (TRL SFT; freezing, LoRA, FAST tokens, omni head)",
        output=lambda c: c.output_dir,
        output_field="output_dir",
        inputs=_sft_inputs,
        complete=_sft_complete,
        resume="flag",
        training=True,
        summary=_sft_summary,
    ),
    "sft_evaluate": StageKind(
        "sft.config:EvaluateConfig",
        "sft.evaluate:evaluate",
        "generate answers of a checkpoint on shards and score them per task",
        output=lambda c: c.out,
        output_field="out",
        inputs=lambda c: _policy_refs(c.checkpoint, "checkpoint") + [Ref(f"data.{i}", d) for i, d in enumerate(c.data)],
        complete=_file("eval.json"),
        summary=lambda r: f"{_count(r.get('samples'), 'samples')} scored on {len(r.get('per_task', {}))} task(s)",
    ),
    "sft_push": StageKind(
        "sft.push:PushConfig",
        "sft.push:push",
        "upload a checkpoint folder to the Hub",
        inputs=lambda c: [Ref("checkpoint", c.checkpoint)],
        summary=lambda r: f"pushed: {r}",
    ),
    "vla_train": StageKind(
        "vla.configuration_vla:VLATrainConfig",
        "vla.train:train",
        "train a VLA (VLM + <ActionQuery> + MLP head) on robot data; a checkpoint every save_every steps",
        output=lambda c: c.out,
        output_field="out",
        inputs=_vla_inputs,
        complete=_vla_complete,
        resume="flag",
        training=True,
        summary=_vla_summary,
    ),
    "tiny_models": StageKind(
        "datasets_build.tiny_models_stage:TinyModelsConfig",
        "datasets_build.tiny_models_stage:install_tiny_models",
        "install tiny random VLMs under the paper's Hub ids in the HF cache (offline demo)",
        complete=_tiny_complete,
        provides=_tiny_ids,
        summary=_tiny_summary,
    ),
    "download": StageKind(
        "vla.download:DownloadConfig",
        "vla.download:download_stage",
        "download a backbone (weights + processor) into the HF cache and check that it loads",
        complete=_download_complete,
        provides=lambda c: [c.repo_id],
        summary=lambda r: f"{r.get('repo_id')}: {r.get('bytes', 0) / 1e9:.2f} GB at {r.get('path')}",
    ),
    "evaluate": StageKind(
        "evaluation.run:RunConfig",
        "evaluation.run:run",
        "roll a policy out in a simulator (demo, libero, calvin, simpler, maniskill); resumable",
        output=lambda c: c.out,
        output_field="out",
        inputs=lambda c: _policy_refs(c.policy),
        complete=_evaluate_complete,
        resume="native",
        workers=("workers",),
        summary=_eval_summary,
        execution_only=("batch_inference",),
    ),
    "merge_eval": StageKind(
        "evaluation.merge:MergeConfig",
        "evaluation.merge:merge",
        "join the shard runs of one evaluation (--num-shards N) into one summary; refuses an incomplete set",
        output=lambda c: c.out,
        output_field="out",
        inputs=lambda c: [Ref(f"shards.{i}", x) for i, x in enumerate(c.shards) if not set("*?[") & set(x)],
        complete=_evaluate_complete,
        summary=_eval_summary,
    ),
    "sweep": StageKind(
        "evaluation.sweep:SweepConfig",
        "evaluation.sweep:sweep",
        "evaluate every checkpoint of a training run in every chunk mode; best-of reported",
        output=sweep_out,
        output_field="out",
        inputs=lambda c: [Ref("run", c.run)],
        complete=_sweep_complete,
        resume="native",
        workers=("workers",),
        summary=_sweep_summary,
    ),
    "report": StageKind(
        "evaluation.report:ReportConfig",
        "evaluation.report:report",
        "paper-style tables (Markdown, CSV, LaTeX) and plots from evaluation results",
        output=lambda c: c.out,
        output_field="out",
        inputs=_report_inputs,
        complete=_file("table.md"),
        resume="restart",
        summary=_report_summary,
    ),
}


@dataclass
class Context:
    """What completion checks need beyond the config: the environment the stages will run in."""

    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))


__all__ = ["EXECUTION_ONLY", "STAGE_KINDS", "Ref", "StageKind", "cached_model", "hub_cache", "sweep_out"]
