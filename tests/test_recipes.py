import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
import runner  # noqa: E402

from datasets_build.errors import ConfigError  # noqa: E402


def _recipe(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


GOOD = """
vars:
  run_dir: /tmp/x
stages:
  demo_episodes:
    out: ${vars.run_dir}/eps
    episodes: 3
  second:
    uses: demo_episodes
    out: ${vars.run_dir}/eps2
"""


def test_plan_resolves_vars_overrides_and_uses(tmp_path):
    plan = runner.plan_recipe(_recipe(tmp_path, GOOD), ["run_dir=/data", "demo_episodes.episodes=5"])
    assert [(p.name, p.kind) for p in plan] == [("demo_episodes", "demo_episodes"), ("second", "demo_episodes")]
    assert plan[0].config.out == "/data/eps"
    assert plan[0].config.episodes == 5
    assert plan[1].config.out == "/data/eps2"
    assert plan[1].config.episodes == 12  # default


@pytest.mark.parametrize(
    ("text", "overrides", "match"),
    [
        (GOOD, ["demo_episodes.epsiodes=3"], r"stages.demo_episodes: epsiodes: unknown key"),
        (GOOD, ["nope=1"], r"override 'nope': unknown key"),
        ("stages:\n  demo_episodes:\n    episodes: many\n", [], "episodes"),
        ("stages:\n  bake_cake: {}\n", [], "unknown stage kind 'bake_cake'"),
        ("stagez: {}\n", [], "unknown top-level key"),
        ("stages: [a\n", [], "malformed YAML"),
    ],
)
def test_bad_recipes_are_one_line_errors(tmp_path, text, overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        runner.plan_recipe(_recipe(tmp_path, text), overrides)
    assert "\n" not in str(err.value)
    assert "r.yaml" in str(err.value)


def test_run_sh_dry_run_and_error_exit():
    out = subprocess.run(
        ["bash", "recipes/run.sh", "demo", "--dry-run", "demo_episodes.episodes=2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "episodes: 2" in out.stdout
    bad = subprocess.run(
        ["bash", "recipes/run.sh", "demo", "--dry-run", "demo_episodes.bogus=2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "bogus: unknown key" in bad.stderr


def test_env_is_set_only_when_stages_run(tmp_path, monkeypatch):
    text = GOOD.replace("stages:", "env:\n  VLM4VLA_TEST_VAR: ${vars.run_dir}/hf\nstages:", 1)
    path = _recipe(tmp_path, text)
    monkeypatch.delenv("VLM4VLA_TEST_VAR", raising=False)
    runner.plan_recipe(path, [])
    assert "VLM4VLA_TEST_VAR" not in os.environ
    runner.plan_recipe(path, ["run_dir=/data"], set_env=True)
    assert os.environ["VLM4VLA_TEST_VAR"] == "/data/hf"
    with pytest.raises(ConfigError, match="env"):
        runner.plan_recipe(_recipe(tmp_path, text.replace("VLM4VLA_TEST_VAR: ${vars.run_dir}/hf", "- a")), [])


RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
PAPER_RECIPES = {
    "vla_benchmark", "vla_freezing", "vla_prompt_scheme", "vla_image_resolution", "vla_from_scratch",
    "vla_learning_rate", "fast_tokens_freeze_vision", "fast_tokens_unfreeze_vision", "aux_robopoint", "aux_vica",
    "aux_bridgevqa", "aux_robo2vlm", "aux_vqa_mix", "aux_omni_generation", "aux_robobrain2",
    "bridgevqa_from_bridge_calvin",
}  # fmt: skip
HEAVY = ("torch", "transformers", "trl", "peft", "accelerate", "diffusers", "webdataset", "datasets", "mujoco",
         "libero", "calvin_env", "simpler_env", "mani_skill", "sapien", "matplotlib")  # fmt: skip


def test_every_experiment_of_the_paper_has_a_recipe():
    assert set(RECIPES) >= PAPER_RECIPES


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_plans_in_both_profiles_and_overwrites_nothing(name):
    text = (ROOT / "recipes" / f"{name}.yaml").read_text()
    assert "overwrite: true" not in text
    full = runner.make_plan(ROOT / "recipes" / f"{name}.yaml", [])
    tiny = runner.make_plan(ROOT / "recipes" / f"{name}.yaml", ["profile=tiny"])
    assert full.stages
    assert not tiny.problems  # every tiny input is written by a stage of the recipe (fixtures, tiny models)
    assert all(not s.launch or s.launch.num_processes == "auto" for s in full.stages)
    reports = [s for s in full.stages if s.kind == "report"]
    if name in PAPER_RECIPES - {"bridgevqa_from_bridge_calvin"}:
        assert reports
        assert reports[0].config.paper  # the paper's numbers beside ours
        assert "demo sim standing in" in next(s for s in tiny.stages if s.kind == "report").config.caption


def test_dry_run_of_every_recipe_imports_no_model_or_simulator(tmp_path):
    """Every recipe's --dry-run (full profile) in one process: no model or simulator package gets imported."""
    others = [r for r in RECIPES if r != "demo"]
    script = (
        "import sys; sys.path.insert(0, 'recipes'); import runner\n"
        f"for name in {others!r}:\n"
        "    assert runner.main([name, '--dry-run']) == 0, name\n"
        "print('SIM', 'pybullet' in sys.modules)\n"
        "assert runner.main(['demo', '--dry-run']) == 0\n"  # its expert_eval config lives with the demo sim
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "SIM False" in out.stdout
    assert "HEAVY []" in out.stdout


def test_dry_run_takes_under_three_seconds_of_cpu():
    """One dry-run of the headline recipe, as a user runs it: under 3 s of CPU (time on a busy machine varies)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, "recipes/runner.py", "fast_tokens_unfreeze_vision", "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert out.returncode == 0, out.stderr
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 3.0, cpu
    assert "fast_tokenizer (fit_fast)" in out.stdout
    assert "problems (a run stops at the first" in out.stdout  # /data/bridge_dataset is not on this machine


def _rlds_takes_bridge_labels() -> bool:
    import inspect

    from datasets_build.sources.rlds import RLDSSource

    return "bridge_labels" in inspect.signature(RLDSSource.__init__).parameters


@pytest.mark.slow
@pytest.mark.skipif(not _rlds_takes_bridge_labels(), reason="the Bridge preset's bridge_labels option (issue 15)")
def test_headline_recipe_tiny_end_to_end_then_cached(tmp_path, monkeypatch, capsys):
    """`fast_tokens_unfreeze_vision profile=tiny`: every stage on tiny models, a Bridge-format fixture and the demo
    sim; run again, every stage is cached and the run takes seconds."""
    import time

    monkeypatch.chdir(tmp_path)
    for var in ("HF_HOME", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)  # the recipe's env points the tiny cache into the run folder
    started = time.perf_counter()
    assert runner.main(["fast_tokens_unfreeze_vision", "profile=tiny"]) == 0, capsys.readouterr().err
    first = time.perf_counter() - started
    out = capsys.readouterr().out
    assert out.count(": running") == 15
    report = next((tmp_path / "runs" / "tiny" / "recipes").rglob("report/table.md")).read_text()
    assert "Freeze vision encoder during VLA training (paper)" in report
    assert "| Unfreeze Vision FT |" in report
    assert "45.7 (+18.1)" in report  # the paper's cell beside ours
    assert "demo sim standing in" in report
    started = time.perf_counter()
    assert runner.main(["fast_tokens_unfreeze_vision", "profile=tiny"]) == 0
    second = time.perf_counter() - started
    out = capsys.readouterr().out
    assert out.count(": cached") == 15
    assert second < 10, (first, second)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`bash recipes/run.sh demo` as a newcomer runs it, output to a log (not a terminal): its folder and console."""
    run_dir = tmp_path_factory.mktemp("demo") / "demo"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HOME", "HF_HUB_CACHE")}
    out = subprocess.run(
        [sys.executable, "recipes/runner.py", "demo", f"run_dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    console = out.stdout + out.stderr
    assert out.returncode == 0, console[-3000:]
    return run_dir, console


def _demo_rates(run_dir: Path) -> dict[str, float]:
    """Success rate on the demo's task family of each of its two VLAs, from their evaluation summaries."""
    rates = {}
    for name in ("base", "sft"):
        summary = json.loads((run_dir / "eval" / name / "summary.json").read_text())
        rates[name] = summary["metrics"]["per_task"]["gripper_over_block"]["success_rate"]
    return rates


@pytest.mark.slow
def test_demo_recipe_explains_itself_in_few_lines(demo_run: tuple[Path, str]) -> None:
    """The demo's console stays short, its two VLAs are rolled out on layouts no recording used, and the report
    explains what was compared against chance."""
    from datasets_build.sim import EVALUATION_SEED_BASE

    run_dir, console = demo_run
    lines = console.splitlines()  # a carriage-return progress bar counts once per redraw
    assert len(lines) <= 150, len(lines)
    for noise in ("Loading weights", "Writing model shards", "Removed shared tensor", "it/s]"):
        assert noise not in console
    assert sum(": running" in line for line in lines) == 31  # one line when a stage starts, one when it ends
    for name in ("base", "sft"):
        summary = json.loads((run_dir / "eval" / name / "summary.json").read_text())
        assert summary["metrics"]["per_task"]["gripper_over_block"]["episodes"] == 20
        episodes = [json.loads(x) for x in (run_dir / "eval" / name / "episodes.jsonl").read_text().splitlines()]
        assert min(e["seed"] for e in episodes) >= EVALUATION_SEED_BASE  # never a recorded layout
    rates = _demo_rates(run_dir)
    report = run_dir / "report"
    for name in ("README.md", "success_per_task.png", "table.md", "checkpoints_boxplot.png"):
        assert (report / name).is_file(), name
    readme = (report / "README.md").read_text()
    assert "VLA on the base backbone" in readme
    assert "VLA on the SFT backbone" in readme
    assert "Chance is 0 %" in readme
    assert "standard error" in readme
    assert f"{round(100 * rates['base'])} % ±" in readme
    assert "robo2vlm/" in readme  # the SFT stage's per-task scores on the held-out corpus
    assert "| Task | base backbone | after SFT | chance |" in readme
    tuned = json.loads((run_dir / "sft" / "eval" / "eval.json").read_text())["per_task"]["all"]
    assert tuned["parsed"] >= 0.9, tuned  # after SFT every answer names an option (the random backbone's do not)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="issue 18 open: the demo VLAs learn (head_input_norm batch) but stay far below 50 % on held-out layouts",
)
def test_demo_policy_learns_its_task_family(demo_run: tuple[Path, str]) -> None:
    """Issue 18's bar: >= 50 % success on held-out layouts (chance 0). Strict: it fails loudly once it passes."""
    rates = _demo_rates(demo_run[0])
    assert rates["base"] >= 0.5, rates
