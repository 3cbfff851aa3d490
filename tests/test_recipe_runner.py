"""The recipe runner: cached and resumable stages, --force/--from/--only, bad input, launching training stages."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
import recipe_launch  # noqa: E402
import runner  # noqa: E402
from recipe_kinds import Ref, StageKind  # noqa: E402

from datasets_build.errors import ConfigError  # noqa: E402

COUNT = StageKind(
    "tests.recipe_stage_fixtures:CountConfig",
    "tests.recipe_stage_fixtures:count_stage",
    "test stage: writes steps",
    output=lambda c: c.out,
    output_field="out",
    inputs=lambda c: [Ref("input", c.input)] if c.input else [],
    complete=lambda c, env: Path(c.out, "done.json").is_file(),
    resume="flag",
    workers=("workers",),
    summary=lambda r: f"{r['steps']} steps",
)


@pytest.fixture
def count_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(runner.STAGE_KINDS, "count", COUNT)
    monkeypatch.setitem(runner.STAGE_KINDS, "count_train", dataclasses.replace(COUNT, training=True))
    monkeypatch.delenv("RECIPE_TEST_CRASH_AT", raising=False)


def _chain(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "chain.yaml"
    path.write_text(
        f"""
vars:
  run_dir: {tmp_path}/run
stages:
  first:
    uses: count
    out: ${{vars.run_dir}}/first
    log: {tmp_path}/log.txt
    steps: 3
  second:
    uses: count
    input: ${{vars.run_dir}}/first
    out: ${{vars.run_dir}}/second
    log: {tmp_path}/log.txt
{extra}"""
    )
    return path


def _runs(tmp_path: Path) -> list[str]:
    log = tmp_path / "log.txt"
    return log.read_text().splitlines() if log.is_file() else []


def test_finished_stages_are_cached_and_records_written(tmp_path, count_kind, capsys):
    recipe = _chain(tmp_path)
    assert runner.main([str(recipe)]) == 0
    assert len(_runs(tmp_path)) == 2
    record = json.loads((tmp_path / "run" / "second" / "recipe_stage.json").read_text())
    assert record["kind"] == "count"
    assert record["result"]["steps"] == 3
    assert record["inputs"]["input"].startswith("stage first ")
    out = capsys.readouterr().out
    assert "second: 3 steps in" in out
    assert "full result:" in out
    assert '"resumed_from"' not in out  # the full result goes to the file, not the console
    assert runner.main([str(recipe)]) == 0
    assert len(_runs(tmp_path)) == 2  # nothing ran again
    out = capsys.readouterr().out
    assert "1/2 first: cached" in out
    assert "2/2 second: cached" in out
    assert runner.main([str(recipe), "--verbose", "--force", "second"]) == 0
    assert '"resumed_from": 0' in capsys.readouterr().out


def test_a_changed_config_refuses_to_replace_a_finished_output_without_force(tmp_path, count_kind, capsys):
    recipe = _chain(tmp_path)
    assert runner.main([str(recipe)]) == 0
    capsys.readouterr()
    assert runner.main([str(recipe), "first.steps=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "stage first:" in err
    assert "changed: steps" in err
    assert "--force first" in err
    assert len(_runs(tmp_path)) == 2  # refused before anything ran
    assert runner.main([str(recipe), "first.steps=4", "--force", "first"]) == 0
    runs = _runs(tmp_path)
    assert len(runs) == 4  # first re-ran, and second (downstream) with it
    assert json.loads((tmp_path / "run" / "first" / "done.json").read_text())["steps"] == 4


def test_an_execution_only_change_keeps_the_cache(tmp_path, count_kind, capsys):
    recipe = _chain(tmp_path)
    assert runner.main([str(recipe)]) == 0
    assert runner.main([str(recipe), "first.workers=auto", "second.workers=2"]) == 0
    assert len(_runs(tmp_path)) == 2


def test_an_interrupted_stage_resumes_and_its_downstream_runs(tmp_path, count_kind, capsys, monkeypatch):
    recipe = _chain(tmp_path)
    monkeypatch.setenv("RECIPE_TEST_CRASH_AT", "2")
    assert runner.main([str(recipe)]) == 2
    assert "interrupted at step 2" in capsys.readouterr().err
    assert not (tmp_path / "run" / "first" / "recipe_stage.json").exists()
    monkeypatch.delenv("RECIPE_TEST_CRASH_AT")
    assert runner.main([str(recipe), "--dry-run"]) == 0
    assert re.search(r"first \(count\)\s+resume", capsys.readouterr().out)
    assert runner.main([str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "first (count): resuming" in out
    assert _runs(tmp_path)[0].startswith("first from 2")  # the two finished steps were kept
    assert runner.main([str(recipe)]) == 0
    assert "2/2 second: cached" in capsys.readouterr().out


def test_an_output_written_outside_the_runner_is_never_deleted(tmp_path, count_kind, capsys):
    recipe = _chain(tmp_path)
    foreign = tmp_path / "run" / "first"
    foreign.mkdir(parents=True)
    (foreign / "precious.txt").write_text("days of compute")
    assert runner.main([str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "written outside this runner" in err
    assert "--force first" in err
    assert (foreign / "precious.txt").is_file()


def test_from_only_and_their_upstream_check(tmp_path, count_kind, capsys):
    recipe = _chain(tmp_path)
    assert runner.main([str(recipe), "--only", "second"]) == 2
    assert "needs first, which has not finished" in capsys.readouterr().err
    assert runner.main([str(recipe), "--stage", "first"]) == 0  # --stage is --only
    assert [r.split()[0] for r in _runs(tmp_path)] == ["first"]
    assert runner.main([str(recipe), "--from", "second"]) == 0
    assert [r.split()[0] for r in _runs(tmp_path)] == ["first", "second"]
    out = capsys.readouterr().out
    assert "1/2 first: skipped (not selected)" in out
    assert runner.main([str(recipe), "--from", "nope"]) == 2
    assert "stage 'nope' not in this recipe" in capsys.readouterr().err


def test_dry_run_shows_env_plan_and_cache_state(tmp_path, count_kind, capsys):
    recipe = _chain(tmp_path, "env:\n  MY_FLAG: hello\n")
    assert runner.main([str(recipe), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "MY_FLAG: hello" in out
    assert "first (count)" in out
    assert "after first" in out
    assert not (tmp_path / "run").exists()
    assert "MY_FLAG" not in os.environ
    assert runner.main([str(recipe)]) == 0
    capsys.readouterr()
    assert runner.main([str(recipe), "--dry-run", "second.steps=5"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"first \(count\)\s+cached", out)
    assert re.search(r"second \(count\)\s+blocked", out)
    assert "changed: steps" in out


def test_bad_inputs_are_one_line_errors_before_anything_runs(tmp_path, count_kind, capsys):
    recipe = _chain(
        tmp_path, "  third:\n    uses: count\n    input: /no/such/dataset\n    out: ${vars.run_dir}/third\n"
    )
    assert runner.main([str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "stages.third.input: /no/such/dataset: no such file or folder" in err
    assert not (tmp_path / "run").exists()
    for args, message in (
        (["first.nope=1"], "stages.first: nope: unknown key"),
        (["nope=1"], "override 'nope': unknown key"),
        (["first.overwrite=true"], "recipes never overwrite"),
        (["profile=huge"], "profile 'huge': not defined"),
        (["--force", "third"], "--force ['third']: not a stage"),
    ):
        assert runner.main([str(_chain(tmp_path)), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err, (args, err)
        assert "\n" not in err


@pytest.mark.parametrize("value", ["'{'", "[1, 2]", "3"])
def test_vars_that_is_not_a_mapping_is_a_config_error(tmp_path, count_kind, value):
    """Fuzz escape (recipe-yaml, 10k cases): `vars: '{'` raised a bare TypeError while planning."""
    recipe = _chain(tmp_path)
    recipe.write_text(recipe.read_text().replace(f"vars:\n  run_dir: {tmp_path}/run", f"vars: {value}"))
    with pytest.raises(ConfigError, match=r"chain.yaml: vars: must be a mapping of names to values"):
        runner.make_plan(recipe, [])


@pytest.mark.parametrize("like", ["{a: 1}", "[first]", "3"])
def test_like_that_is_not_a_stage_name_is_a_config_error(tmp_path, count_kind, like):
    """Fuzz escape (recipe-yaml, 10k cases): `like:` holding a mapping raised TypeError (unhashable) while planning."""
    recipe = _chain(tmp_path, f"  third:\n    like: {like}\n")
    with pytest.raises(ConfigError, match=r"chain.yaml: stages.third.like: .* is not a stage of this recipe"):
        runner.make_plan(recipe, [])


def test_tiny_model_ids_that_are_not_text_are_a_config_error(tmp_path):
    """Fuzz escape (recipe-yaml, 10k cases): `ids: [{a: 1}]` in a tiny_models stage raised an unhashable TypeError."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"stages:\n  tiny_models:\n    hf_home: {tmp_path}/hf\n    ids: [{{a: 1}}]\n")
    with pytest.raises(ConfigError, match=r"r.yaml: stages.tiny_models: ids: must be a list of strings"):
        runner.make_plan(recipe, [])


def test_a_backbone_in_no_cache_is_refused_offline(tmp_path, capsys, monkeypatch):
    data = tmp_path / "episodes"
    data.mkdir()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"stages:\n  vla:\n    uses: vla_train\n    out: {tmp_path}/vla\n"
        f"    model: {{backbone: NoSuchOrg/no-such-vlm}}\n    data: {{source: demo, path: {data}}}\n"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert runner.main([str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert "stages.vla.model.backbone: NoSuchOrg/no-such-vlm: not in the HF cache" in err
    assert "\n" not in err
    assert not (tmp_path / "vla").exists()


def test_extends_profiles_and_stage_removal(tmp_path, count_kind):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "base.yaml").write_text(
        "vars: {run_dir: /tmp/x, steps: 3}\n"
        "stages:\n  a: {uses: count, out: '${vars.run_dir}/a', steps: '${vars.steps}'}\n"
        "  b: {uses: count, out: '${vars.run_dir}/b'}\n"
        "profiles:\n  tiny: {vars: {steps: 1}}\n"
    )
    child = tmp_path / "child.yaml"
    child.write_text("extends: templates/base.yaml\nstages:\n  b: null\n  c: {uses: count, out: /tmp/x/c}\n")
    plan = runner.make_plan(child, [])
    assert [s.name for s in plan.stages] == ["a", "c"]
    assert plan.stage("a").config.steps == 3
    assert runner.make_plan(child, ["profile=tiny"]).stage("a").config.steps == 1
    assert runner.make_plan(child, ["profile=tiny", "steps=7"]).stage("a").config.steps == 7
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\nstages: {a: {uses: count, out: /tmp/x}}\n")
    with pytest.raises(ConfigError, match="includes itself"):
        runner.make_plan(tmp_path / "loop.yaml", [])


def test_launch_commands(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cfg, run = COUNT.config, COUNT.run
    one = recipe_launch.launch_command(recipe_launch.LaunchConfig(), cfg, run, Path("c.json"), Path("r.json"))
    assert one[1:5] == ["-m", "accelerate.commands.launch", "--quiet", "--cpu"]
    assert "--num_processes" in one
    assert one[one.index("--num_processes") + 1] == "1"
    assert one[-4:] == [cfg, run, "c.json", "r.json"]
    two = recipe_launch.launch_command(recipe_launch.LaunchConfig(num_processes=2), cfg, run, Path("c"), Path("r"))
    assert two[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in two
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert recipe_launch.visible_gpus() == 4
    gpus = recipe_launch.launch_command(recipe_launch.LaunchConfig(), cfg, run, Path("c"), Path("r"))
    assert "--multi_gpu" in gpus
    assert gpus[gpus.index("--num_processes") + 1] == "4"
    zero2 = str(ROOT / "recipes" / "accelerate" / "zero2.yaml")
    nodes = recipe_launch.LaunchConfig(config=zero2, num_machines=2, machine_rank=1, main_process_ip="10.0.0.1")
    cmd = recipe_launch.launch_command(nodes, cfg, run, Path("c"), Path("r"))
    assert cmd[cmd.index("--config_file") + 1] == zero2
    assert cmd[cmd.index("--num_processes") + 1] == "8"  # 4 GPUs x 2 machines
    assert cmd[cmd.index("--machine_rank") + 1] == "1"
    assert cmd[cmd.index("--main_process_ip") + 1] == "10.0.0.1"
    monkeypatch.setenv("SLURM_NODEID", "3")
    assert recipe_launch.LaunchConfig(machine_rank="auto").rank() == 3
    with pytest.raises(ConfigError, match="main_process_ip"):
        recipe_launch.LaunchConfig(num_machines=2)
    with pytest.raises(ConfigError, match="num_processes"):
        recipe_launch.LaunchConfig(num_processes=0)


def test_a_training_stage_runs_in_a_launched_child(tmp_path, count_kind, capsys, monkeypatch):
    """A training stage runs under `accelerate launch` (1 process on CPU) in a child; then 2 under torchrun."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"stages:\n  train:\n    uses: count_train\n    out: {tmp_path}/train\n    log: {tmp_path}/log.txt\n"
    )
    assert runner.main([str(recipe), "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "accelerate.commands.launch --quiet --cpu --num_processes 1" in out
    record = json.loads((tmp_path / "train" / "recipe_stage.json").read_text())
    assert record["result"]["pid"] != os.getpid()
    assert _runs(tmp_path) == [f"train from 0 rank - pid {record['result']['pid']}"]  # one process: no RANK
    assert runner.main([str(recipe), "launch.num_processes=2", "--force", "train"]) == 0
    ranks = sorted(line.split()[4] for line in _runs(tmp_path)[1:])
    assert ranks == ["0", "1"]  # both processes ran; rank 0 wrote the result
    assert json.loads((tmp_path / "train" / "recipe_stage.json").read_text())["result"]["world_size"] == "2"


def test_a_failing_child_is_one_line(tmp_path, count_kind, capsys, monkeypatch):
    monkeypatch.setenv("RECIPE_TEST_CRASH_AT", "0")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"stages:\n  train:\n    uses: count_train\n    out: {tmp_path}/t\n    launch: {{launcher: inline}}\n"
    )
    assert runner.main([str(recipe)]) == 2
    assert "interrupted at step 0" in capsys.readouterr().err


def test_run_sh_help_shows_the_bare_override():
    out = subprocess.run(["bash", "recipes/run.sh", "--help"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "VAR=VALUE" in out.stdout
    assert "--force STAGE" in out.stdout
    assert "profile=NAME" in out.stdout
    assert "fast_tokens_unfreeze_vision bridge=" in out.stdout


def test_import_corpus_stage_imports_once(tmp_path, capsys):
    """A published corpus (here LLaVA json) imported by a recipe stage, then cached."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(tmp_path / "images" / "a.png")
    records = [
        {"id": "r1", "image": "a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "Red."}]},
    ]  # fmt: skip
    (tmp_path / "vqa.json").write_text(json.dumps(records))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"stages:\n  general_vqa:\n    uses: import_corpus\n    format: llava-json\n    input: {tmp_path}/vqa.json\n"
        f"    image_root: {tmp_path}/images\n    out: {tmp_path}/corpus\n"
    )
    assert runner.main([str(recipe)]) == 0
    assert "general_vqa: 1 samples imported in" in capsys.readouterr().out
    assert (tmp_path / "corpus" / "dataset_card.json").is_file()
    assert runner.main([str(recipe)]) == 0
    assert "general_vqa: cached" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"stages:\n  g:\n    uses: import_corpus\n    format: llava-json\n    input: x\n    out: {tmp_path}/o\n"
    )
    assert runner.main([str(bad)]) == 2
    assert "image_root: required for format llava-json" in capsys.readouterr().err


def test_a_follower_node_joins_without_recording(tmp_path, count_kind, capsys):
    """machine_rank > 0 of a multi-node launch: the runner starts its share of the stage and records nothing."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"launch: {{launcher: inline, num_machines: 2, main_process_ip: 127.0.0.1}}\n"
        f"stages:\n  train:\n    uses: count_train\n    out: {tmp_path}/t\n  after:\n    uses: count\n"
        f"    input: {tmp_path}/t\n    out: {tmp_path}/a\n"
    )
    assert runner.main([str(recipe), "launch.machine_rank=1"]) == 2  # other stages run on machine 0 only
    assert "only training stages run" in capsys.readouterr().err
    assert runner.main([str(recipe), "--only", "train", "launch.machine_rank=1"]) == 0
    assert "joining as machine 1" in capsys.readouterr().out
    assert (tmp_path / "t" / "done.json").is_file()
    assert not (tmp_path / "t" / "recipe_stage.json").exists()


def test_force_never_deletes_the_working_folder(tmp_path, count_kind, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  s:\n    uses: count\n    out: .\n")
    (tmp_path / "keep.txt").write_text("x")
    assert runner.main([str(recipe), "--force", "s"]) == 2
    assert "refusing to delete" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").is_file()
