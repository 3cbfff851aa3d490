"""Fault injection: kill -9 at seeded unit boundaries of a corpus build, a mix, SFT training, VLA training, an
evaluation run and a recipe chain, through the real CLIs (`VLM4VLA_FAULT=POINT:N`, `datasets_build.faults`).

Each stage runs as a chain of processes on one output folder: the first is killed at its point, the same command
is rerun and killed at the next point, and so on (five kills); the last rerun finishes. After every kill the folder
holds no partial artefact under a final name (what has a final name equals the uninterrupted run's), every rerun
resumes from the last complete unit (the units finished before it stay untouched, its log names where it resumed),
and the end result equals one uninterrupted reference run: byte-identical shards and cards, equal step counts and
parameters, equal evaluation summaries. The kill counts N are drawn from a seeded RNG within bounds that make each
fault fire (a fault that does not fire fails the test).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from datasets_build import faults

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SEED = 19
KILLS = 5
QWEN25 = "Qwen/Qwen2.5-VL-3B-Instruct"
KOSMOS = "microsoft/kosmos-2-patch14-224"
EVAL_TASKS = ["gripper_over_block", "move_next_to", "pick_block"]
SHARD_RE = re.compile(r"^[\w.-]+-\d{6}\.tar$")

# Per stage, in chain order: (point, least N, largest N). The bounds keep each fault inside the work left to that
# process, and steer each training chain through a resume from a middle checkpoint.
PLANS: dict[str, list[tuple[str, int, int]]] = {
    "build": [("shard.sample", 1, 6), ("shard.tmp_complete", 1, 2), ("shard.renamed", 1, 2), ("shard.sample", 1, 9),
              ("shard.before_card", 1, 1)],
    "mix": [("shard.renamed", 1, 2), ("shard.sample", 1, 5), ("shard.tmp_complete", 1, 2), ("shard.sample", 1, 4),
            ("shard.before_card", 1, 1)],
    "sft": [("sft.model_saved", 2, 3), ("sft.step", 1, 2), ("sft.checkpoint_saved", 1, 1), ("sft.step", 1, 1),
            ("sft.before_final", 1, 1)],
    "vla": [("vla.step", 3, 4), ("vla.weights_saved", 1, 1), ("vla.state_saved", 1, 1), ("vla.step", 1, 2),
            ("vla.before_summary", 1, 1)],
    "eval": [("eval.episode", 1, 2), ("eval.episode", 1, 1), ("eval.episode", 1, 1), ("eval.episode", 1, 1),
             ("eval.before_summary", 1, 1)],
    "recipe": [("recipe.stage_started", 1, 2), ("shard.renamed", 1, 2), ("recipe.stage_ran", 1, 1),
               ("eval.episode", 1, 1), ("recipe.stage_recorded", 1, 1)],
}  # fmt: skip


def draw(stage: str) -> list[str]:
    """The stage's seeded faults, `POINT:N`."""
    rng = random.Random(f"{SEED}:{stage}")
    return [f"{point}:{rng.randint(least, largest)}" for point, least, largest in PLANS[stage]]


def cli(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python ARGS` from the project root (HF caches and offline settings as the session's), with the fault set."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(faults.ENV, None)
    if fault:
        env[faults.ENV] = fault
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def finished(args: list[str]) -> str:
    """Run to the end; its stdout."""
    done = cli(args)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def chain(args: list[str], stage: str, after_kill: Callable[[str, str], None], before: Callable[[], Any]) -> str:
    """Kill `args` at each seeded fault of `stage`, rerunning it each time; then let it finish (its stdout).

    `before()` snapshots the folder before each run (the snapshot goes to `after_kill(fault, stdout)` through the
    caller's closure); `after_kill` checks what the kill left.
    """
    for fault in draw(stage):
        before()
        done = cli(args, fault)
        assert done.returncode == -signal.SIGKILL, f"{fault} did not fire ({done.returncode}): {done.stderr[-3000:]}"
        after_kill(fault, done.stdout)
    before()
    return finished(args)


def stats(paths: list[Path]) -> dict[str, tuple[int, int]]:
    """Inode and mtime of each file: a unit a rerun left untouched keeps both."""
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths if p.exists()}


def untouched(before: dict[str, tuple[int, int]]) -> None:
    """Each file of the snapshot is still there, neither replaced nor rewritten."""
    for path, stat in before.items():
        assert Path(path).exists(), f"{path}: a complete unit was deleted by the rerun"
        assert (Path(path).stat().st_ino, Path(path).stat().st_mtime_ns) == stat, f"{path}: rewritten by the rerun"


def files(folder: Path, run_dir: Path | None = None, reference: Path | None = None) -> dict[str, bytes]:
    """Every file of a shard folder by name (the lock file aside: it holds the pid), with the paths under `run_dir`
    that a card records (a mix's inputs) written as under `reference`."""
    out = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}
    if run_dir is not None and reference is not None:
        out = {k: v.replace(str(run_dir).encode(), str(reference).encode()) for k, v in out.items()}
    return out


def tensors_equal(a: Path, b: Path) -> None:
    """Two safetensors files hold the same tensors, bit for bit."""
    left, right = load_file(a), load_file(b)
    assert left.keys() == right.keys()
    assert all(torch.equal(left[k], right[k]) for k in left), f"{a} and {b} differ"


# -- shard folders (a corpus build, a mix) ----------------------------------------------------------------------


class ShardChain:
    """The checks of one killed-and-rerun shard folder against its uninterrupted reference."""

    def __init__(self, out: Path, reference: Path) -> None:
        self.out, self.reference = out, reference
        self.kept: dict[str, tuple[int, int]] = {}
        self.progress_samples = 0

    def before(self) -> None:
        """Remember the shards the progress file calls complete: the rerun must keep them as they are."""
        progress = self.out / ".progress.json"
        state = json.loads(progress.read_text()) if progress.is_file() else {"shards": [], "num_samples": 0}
        self.kept = stats([self.out / entry["name"] for entry in state["shards"]])
        self.progress_samples = int(state["num_samples"])

    def after_kill(self, fault: str, stdout: str) -> None:
        untouched(self.kept)
        assert not (self.out / "dataset_card.json").exists(), fault  # the card is the last file
        reference = files(self.reference)
        for name, data in files(self.out).items():
            if SHARD_RE.match(name):  # a final name: complete and equal to the uninterrupted build's shard
                assert data == reference[name], f"{fault}: {name} differs from the uninterrupted build"

    def finish(self, stdout: str) -> None:
        untouched(self.kept)
        summary = json.loads(stdout[stdout.index("{") :])
        assert summary["resumed_from"] == self.progress_samples  # the last complete shard, not earlier
        assert files(self.out) == files(self.reference)


@pytest.fixture(scope="module")
def corpus(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    """The build command (minus --out) and its uninterrupted output: 68 samples in 10 shards."""
    args = ["-m", "datasets_build", "build", "robo2vlm", "--source", "demo", "--input", str(demo_dir), "--seed", "3"]
    args += ["--max-samples-per-shard", "7", "--resume"]
    out = tmp_path_factory.mktemp("faults_build") / "reference"
    finished([*args, "--out", str(out)])
    return args, out


def test_corpus_build_survives_kill_9(corpus: tuple[list[str], Path], tmp_path: Path) -> None:
    args, reference = corpus
    out = tmp_path / "killed"
    check = ShardChain(out, reference)
    check.finish(chain([*args, "--out", str(out)], "build", check.after_kill, check.before))


def test_mix_survives_kill_9(corpus: tuple[list[str], Path], demo_dir: Path, tmp_path: Path) -> None:
    from datasets_build.corpora import BuildConfig, build_corpus

    points = tmp_path / "robopoint"
    build_corpus(BuildConfig(name="robopoint", input=str(demo_dir), out=str(points), max_samples=20))
    args = ["-m", "datasets_build", "mix", "--input", f"r2v={corpus[1]}@2", "--input", f"points={points}@1"]
    args += ["--total", "36", "--max-samples-per-shard", "5", "--resume", "progress=false"]
    reference = tmp_path / "reference"
    finished([*args, "--out", str(reference)])
    out = tmp_path / "killed"
    check = ShardChain(out, reference)
    check.finish(chain([*args, "--out", str(out)], "mix", check.after_kill, check.before))


# -- SFT training ---------------------------------------------------------------------------------------------
SFT_FILES = {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "README.md"}


def test_sft_training_survives_kill_9(corpus: tuple[list[str], Path], tmp_path: Path) -> None:
    from datasets_build.tiny_models import install_tiny_backbones
    from sft.checkpoints import COMPLETE_FILE, checkpoint_folders

    install_tiny_backbones(ids=[QWEN25])
    recipe = tmp_path / "sft.yaml"
    trainer = {"max_steps": 6, "save_steps": 2, "save_total_limit": 10, "logging_steps": 1, "learning_rate": 1e-3}
    recipe.write_text(
        json.dumps({"model": QWEN25, "data": [{"path": str(corpus[1])}], "shuffle_buffer": 8, "trainer": trainer})
    )
    args = ["-m", "sft", "train", str(recipe), "resume=true"]
    reference = tmp_path / "reference"
    finished([*args, f"output_dir={reference}"])
    out = tmp_path / "killed"
    seen: dict[str, Any] = {}

    def complete() -> list[Path]:
        return [p for p in checkpoint_folders(out / "checkpoints") if (p / COMPLETE_FILE).is_file()]

    def before() -> None:
        done = complete()
        seen["latest"] = done[-1] if done else None
        seen["kept"] = stats([f for p in done for f in p.iterdir() if f.is_file()])

    def resumed_from_latest(stdout: str) -> None:
        if seen["latest"] is None:
            assert "resumed from" not in stdout
        else:
            assert f"resumed from {seen['latest']}\n" in stdout

    def after_kill(fault: str, stdout: str) -> None:
        untouched(seen["kept"])
        resumed_from_latest(stdout)
        assert not (out / "final").exists(), fault
        for folder in complete():  # a marked checkpoint holds every file, and the uninterrupted run's weights
            assert {p.name for p in folder.iterdir()} >= SFT_FILES, folder
            tensors_equal(folder / "model.safetensors", reference / "checkpoints" / folder.name / "model.safetensors")

    stdout = chain([*args, f"output_dir={out}"], "sft", after_kill, before)
    resumed_from_latest(stdout)
    untouched(seen["kept"])
    assert all((p / COMPLETE_FILE).is_file() for p in checkpoint_folders(out / "checkpoints"))  # partials replaced
    ours, theirs = (json.loads((d / "train_summary.json").read_text()) for d in (out, reference))
    assert ours["steps"] == theirs["steps"] == 6
    assert ours["parameters_sha1"] == theirs["parameters_sha1"]
    tensors_equal(out / "final" / "model.safetensors", reference / "final" / "model.safetensors")


# -- VLA training ---------------------------------------------------------------------------------------------


def test_vla_training_survives_kill_9(demo_dir: Path, tmp_path: Path) -> None:
    from datasets_build.tiny_models import install_tiny_backbones
    from vla.train import checkpoint_dirs

    install_tiny_backbones(ids=[KOSMOS])
    args = ["-m", "vla", "train", "steps=6", "batch_size=4", "lr=1e-3", "save_every=2", "log_every=1"]
    args += ["progress=false", "resume=true", f"model.backbone={KOSMOS}", "model.chunk_size=2"]
    args += ["model.freeze_vision_tower=true", "data.source=demo", f"data.path={demo_dir}", "data.num_workers=0"]
    reference = tmp_path / "reference"
    finished([*args, f"out={reference}"])
    out = tmp_path / "killed"
    seen: dict[str, Any] = {}

    def before() -> None:
        done = checkpoint_dirs(out)
        seen["latest"] = done[-1] if done else None
        seen["kept"] = stats([f for p in done for f in p.rglob("*") if f.is_file()])

    def resumed_from_latest(stdout: str) -> None:
        if seen["latest"] is None:
            assert "resumed from" not in stdout
        else:
            step = int(seen["latest"].name.split("-")[1])
            assert f"resumed from {seen['latest']} at step {step}\n" in stdout

    def after_kill(fault: str, stdout: str) -> None:
        untouched(seen["kept"])
        resumed_from_latest(stdout)
        assert not (out / "train_summary.json").exists(), fault
        for folder in checkpoint_dirs(out):  # a final name: the complete checkpoint of the uninterrupted run
            assert (folder / "step.json").is_file(), folder
            assert (folder / "train_state").is_dir(), folder
            tensors_equal(folder / "model.safetensors", reference / folder.name / "model.safetensors")

    stdout = chain([*args, f"out={out}"], "vla", after_kill, before)
    resumed_from_latest(stdout)
    ours, theirs = (json.loads((d / "train_summary.json").read_text()) for d in (out, reference))
    assert ours["steps"] == theirs["steps"] == 6
    assert ours["rank_parameter_checksums"] == theirs["rank_parameter_checksums"]
    assert [p.name for p in checkpoint_dirs(out)] == [p.name for p in checkpoint_dirs(reference)]
    last = checkpoint_dirs(out)[-1].name
    tensors_equal(out / last / "model.safetensors", reference / last / "model.safetensors")
    for name in ("model.safetensors",):  # the fp32 masters resume continues from
        tensors_equal(out / last / "train_state" / name, reference / last / "train_state" / name)
    assert not list(out.glob(".tmp-*"))


# -- an evaluation run ---------------------------------------------------------------------------------------
EVAL_ARGS = ["-m", "evaluation", "run", "--sim", "demo", "--policy", "zero", "--trials", "2", "--video", "1"]
EVAL_ARGS += [f"sim_options.tasks=[{','.join(EVAL_TASKS)}]", "sim_options.max_steps=12", "progress=false"]


def episodes(out: Path) -> list[str]:
    path = out / "episodes.jsonl"
    return path.read_text().splitlines() if path.is_file() else []


def comparable(line: str) -> dict[str, Any]:
    """An episode record without its wall time."""
    record = json.loads(line)
    record.pop("wall_s", None)
    return record


def test_evaluation_run_survives_kill_9(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    finished([*EVAL_ARGS, "--out", str(reference)])
    out = tmp_path / "killed"
    seen: dict[str, Any] = {}

    def before() -> None:
        seen["lines"] = episodes(out)

    def after_kill(fault: str, stdout: str) -> None:
        lines = episodes(out)
        point, count = faults.parse(fault)
        new = count if point == "eval.episode" else len(EVAL_TASKS) * 2 - len(seen["lines"])
        assert lines[: len(seen["lines"])] == seen["lines"]  # the finished episodes stay as they were
        assert len(lines) == len(seen["lines"]) + new  # and none of them ran again
        keys = [json.loads(line)["key"] for line in lines]
        assert len(keys) == len(set(keys))
        for key in keys:  # a logged episode has its video (the first trial of each task)
            task, index = key.split("/")
            assert int(index) > 0 or (out / "videos" / f"{task}_{index}.mp4").is_file(), key
        assert not (out / "summary.json").exists(), fault

    chain([*EVAL_ARGS, "--out", str(out)], "eval", after_kill, before)
    assert json.loads((out / "timing.json").read_text())["episodes_run"] == 6 - len(seen["lines"])
    assert json.loads((out / "summary.json").read_text()) == json.loads((reference / "summary.json").read_text())
    ours = sorted(map(comparable, episodes(out)), key=lambda r: r["key"])
    assert ours == sorted(map(comparable, episodes(reference)), key=lambda r: r["key"])


# -- a recipe chain -------------------------------------------------------------------------------------------


def recipe(run_dir: Path, demo_dir: Path) -> dict[str, Any]:
    """Build -> mix -> verify -> evaluate, every stage in the runner's process."""
    return {
        "vars": {"run_dir": str(run_dir)},
        "stages": {
            "corpus": {"uses": "build", "name": "robo2vlm", "source": "demo", "input": str(demo_dir),
                       "out": "${vars.run_dir}/corpus", "seed": 3, "max_samples_per_shard": 7},
            "mixed": {"uses": "mix", "out": "${vars.run_dir}/mix", "mode": "weight", "total": 30,
                      "max_samples_per_shard": 6, "progress": False,
                      "inputs": [{"path": "${vars.run_dir}/corpus", "name": "r2v", "weight": 1.0}]},
            "verify_mix": {"uses": "verify", "path": "${vars.run_dir}/mix"},
            "evaluate": {"sim": "demo", "policy": "zero", "out": "${vars.run_dir}/eval", "trials": 1,
                         "progress": False, "sim_options": {"tasks": EVAL_TASKS, "max_steps": 12}},
        },
    }  # fmt: skip


STAGES = ["corpus", "mixed", "verify_mix", "evaluate"]


def test_recipe_chain_survives_kill_9(demo_dir: Path, tmp_path: Path) -> None:
    runner = str(ROOT / "recipes" / "runner.py")
    reference, out = tmp_path / "reference", tmp_path / "killed"
    for run_dir in (reference, out):
        (tmp_path / f"{run_dir.name}.yaml").write_text(json.dumps(recipe(run_dir, demo_dir)))
    finished([runner, str(tmp_path / "reference.yaml")])
    args = [runner, str(tmp_path / "killed.yaml")]
    seen: dict[str, Any] = {}

    def before() -> None:
        seen["recorded"] = [s for s in STAGES if _record(out, s).is_file()]

    def cached_as_before(stdout: str) -> None:
        for index, stage in enumerate(STAGES, 1):
            if stage in seen["recorded"]:
                assert f"{index}/{len(STAGES)} {stage}: cached" in stdout, stdout
            elif f"{index}/{len(STAGES)} {stage} (" in stdout:  # the first unrecorded stage it reached
                assert "running" in stdout or "resuming" in stdout or "replacing" in stdout
                break

    def after_kill(fault: str, stdout: str) -> None:
        cached_as_before(stdout)
        for folder in ("corpus", "mix"):  # shards under final names equal the reference's; the card only when done
            mine, theirs = out / folder, reference / folder
            if not mine.is_dir():
                continue
            expected = files(theirs)
            for name, data in files(mine, out, reference).items():
                if SHARD_RE.match(name) or name == "dataset_card.json":
                    assert data == expected[name], f"{fault}: {folder}/{name}"
        summary = out / "eval" / "summary.json"
        if summary.is_file():
            assert json.loads(summary.read_text()) == json.loads((reference / "eval" / "summary.json").read_text())

    stdout = chain(args, "recipe", after_kill, before)
    cached_as_before(stdout)
    assert all(_record(out, s).is_file() for s in STAGES)
    assert not list(out.glob(".*.recipe-running.json"))
    for folder in ("corpus", "mix"):
        ours = {k: v for k, v in files(out / folder, out, reference).items() if k != "recipe_stage.json"}
        assert ours == {k: v for k, v in files(reference / folder).items() if k != "recipe_stage.json"}
    assert json.loads((out / "eval" / "summary.json").read_text()) == json.loads(
        (reference / "eval" / "summary.json").read_text()
    )
    assert finished(args).count(": cached") == len(STAGES)  # and a further rerun does nothing


def _record(run_dir: Path, stage: str) -> Path:
    """Where the runner records a finished stage (its output folder; verify writes none: the state folder)."""
    folder = {"corpus": "corpus", "mixed": "mix", "evaluate": "eval"}.get(stage)
    return run_dir / folder / "recipe_stage.json" if folder else run_dir / ".recipe" / "stages" / f"{stage}.json"
