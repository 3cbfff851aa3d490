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


def test_every_shipped_recipe_plans():
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        assert runner.plan_recipe(path, []), path


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


@pytest.mark.slow
def test_headline_recipe_runs_on_a_tiny_bridge(tmp_path, capsys):
    """`fast_tokens_unfreeze_vision` end to end on a Bridge RLDS fixture with a tiny Qwen3-VL-4B (but Simpler)."""
    from transformers import AutoTokenizer

    from datasets_build.tiny_models import install_tiny_backbones
    from tests import rlds_fixtures as fx

    install_tiny_backbones(ids=["Qwen/Qwen3-VL-4B-Instruct"])
    episodes = fx.bridge_v2_episodes((12, 14, 16, 12), height=64, width=80)
    for i, ep in enumerate(episodes):
        ep["steps/language_instruction"] = [f"put the spoon in pot {i}"] * ep["_length"]
    bridge = fx.write_rlds(tmp_path, "bridge_dataset", "1.0.0", fx.bridge_v2_spec(64, 80), episodes, [2, 2])
    run_dir = tmp_path / "run"
    small = [
        f"bridge={bridge}",
        f"run_dir={run_dir}",
        "sft.trainer.max_steps=2",
        "sft.trainer.bf16=false",
        "sft.trainer.dataloader_num_workers=0",
        "vla.steps=2",
        "vla.batch_size=2",
        "vla.save_every=1",
        "vla.data.num_workers=0",
        "fast_tokens.workers=1",
    ]
    stages = ["fast_tokenizer", "fast_tokens", "verify_fast_tokens", "sft", "vla"]
    args = ["fast_tokens_unfreeze_vision", *small, *(x for s in stages for x in ("--stage", s))]
    assert runner.main(args) == 0, capsys.readouterr().err
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "sft" / "final")
    assert tokenizer.convert_tokens_to_ids("<fast_0>") != tokenizer.unk_token_id
    assert (run_dir / "vla" / "checkpoint-000002").is_dir()
    # SimplerEnv cannot run here: the sweep stage says which extra is missing, in one line
    assert runner.main(["fast_tokens_unfreeze_vision", *small, "--stage", "simpler_sweep"]) == 2
    assert "simpler" in capsys.readouterr().err.lower()
