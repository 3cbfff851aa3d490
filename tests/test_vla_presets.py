"""Paper presets (`preset: NAME`): resolved values per benchmark, the explicit-keys-win rule, code vs paper."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from datasets_build.configs import build_config, parse_overrides
from datasets_build.errors import ConfigError
from vla.configuration_vla import VLATrainConfig
from vla.presets import PRESETS, backbone_family_hint, get_preset, preset_record


def _build(*layers: dict[str, Any]) -> VLATrainConfig:
    return build_config(VLATrainConfig, {"out": "runs/x"}, *layers)


def test_calvin_abc_d_resolves_to_vlm4vla_calvin_configs() -> None:
    cfg = _build({"preset": "calvin_abc_d"})
    m, d = cfg.model, cfg.data
    assert (m.chunk_size, m.image_size, m.head_type, m.arm_activation, m.arm_scale) == (
        10,
        224,
        "fc_decoder",
        "tanh",
        1,
    )
    assert (m.normalization, m.action_clip, m.gripper_loss_weight, m.arm_loss_weight) == ("none", 0.65, 0.01, 1.0)
    assert (d.source, d.camera, d.sampler, d.window_rule) == ("calvin", "static", "global", "drop_last")
    assert d.options == {"mode": "language", "cameras": ["static"], "load_depth": False}
    assert d.augment.shift_pad == 10
    assert (d.augment.crop_area, d.augment.brightness, d.augment.hue) == (1.0, 0.0, 0.0)
    assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.lr_scheduler, cfg.seed) == (128, 2e-5, 0.0, "constant", 123)
    assert (cfg.epochs, cfg.warmup_epochs, cfg.save_every_epochs, cfg.grad_clip) == (5.0, 0.25, 1.0, 0.0)
    assert m.eval_sim_options == {}

    paper = _build({"preset": "calvin_abc_d", "preset_follow": "paper"})
    assert (paper.epochs, paper.steps, paper.save_every_epochs, paper.save_every, paper.grad_clip) == (
        0.0,
        30000,
        0.0,
        5000,
        1.0,
    )
    assert paper.warmup_epochs == 0.25  # the paper is silent: the code's value under both


def test_simpler_bridge_and_libero_10_resolve_to_the_open_x_configs() -> None:
    bridge = _build({"preset": "simpler_bridge"})
    assert (bridge.model.chunk_size, bridge.model.normalization, bridge.model.action_clip) == (4, "q01_q99", 0.65)
    assert (bridge.data.source, bridge.data.sampler, bridge.data.shuffle_buffer) == ("rlds", "stream", 51200)
    assert bridge.data.options == {"bridge_labels": "paper"}
    a = bridge.data.augment
    assert (a.shift_pad, a.crop_area, a.brightness, a.contrast, a.saturation, a.hue) == (0, 0.9, 0.2, 0.2, 0.2, 0.05)
    assert (bridge.batch_size, bridge.steps, bridge.epochs, bridge.warmup_steps, bridge.save_every) == (
        512,
        50000,
        0.0,
        2500,
        2500,
    )
    assert bridge.lr == 2e-5  # Qwen2.5-VL-3B (the default backbone) in the code
    assert bridge.model.eval_sim_options == {"simpler": {"late_close_gripper": 2}}
    assert _build({"preset": "simpler_bridge", "preset_follow": "paper"}).lr == 5e-5
    assert _build({"preset": "simpler_bridge", "model": {"backbone": "google/paligemma-3b-pt-224"}}).lr == 5e-5

    libero = _build({"preset": "libero_10"})
    assert (libero.model.chunk_size, libero.data.source, libero.data.options) == (4, "rlds", {})
    assert (libero.warmup_steps, libero.steps, libero.save_every, libero.grad_clip) == (250, 50000, 5000, 0.0)
    assert libero.model.eval_sim_options == {"libero": {"render_size": 256, "center_crop": 0.9}}
    hdf5 = _build({"preset": "libero_10", "data": {"source": "libero"}})
    assert hdf5.data.options == {"filter_noops": True, "cameras": ["agentview"]}
    assert get_preset("libero_10").data_image_size == 256


def test_explicit_keys_win_even_at_their_default() -> None:
    cfg = _build({"preset": "calvin_abc_d", "seed": 0, "model": {"gripper_loss_weight": 1.0}, "batch_size": 4})
    assert (cfg.seed, cfg.model.gripper_loss_weight, cfg.batch_size) == (0, 1.0, 4)
    assert cfg.model.chunk_size == 10  # not set: from the preset
    # a step count set explicitly replaces the preset's epochs (and likewise warm-up and checkpoints)
    cfg = _build({"preset": "calvin_abc_d", "steps": 7, "warmup_steps": 2, "save_every": 3})
    assert (cfg.steps, cfg.epochs, cfg.warmup_steps, cfg.warmup_epochs, cfg.save_every, cfg.save_every_epochs) == (
        7,
        0.0,
        2,
        0.0,
        3,
        0.0,
    )
    # source options merge key by key; an explicit option wins
    cfg = _build({"preset": "calvin_abc_d", "data": {"options": {"scenes": ["A"], "load_depth": True}}})
    assert cfg.data.options == {"mode": "language", "cameras": ["static"], "load_depth": True, "scenes": ["A"]}
    # the same from a YAML recipe plus command-line overrides (the CLI path)
    recipe = yaml.safe_load("preset: simpler_bridge\nout: runs/b\nmodel: {chunk_size: 8}\n")
    cfg = build_config(VLATrainConfig, recipe, parse_overrides(["preset_follow=paper", "lr=1e-4"]))
    assert (cfg.model.chunk_size, cfg.lr, cfg.save_every, cfg.batch_size) == (8, 1e-4, 5000, 512)


def test_without_a_preset_nothing_changes() -> None:
    assert _build({}) == VLATrainConfig(out="runs/x")


def test_unknown_preset_and_follow_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'calvin'; known: calvin_abc_d, simpler_bridge, libero_10"):
        _build({"preset": "calvin"})
    with pytest.raises(ConfigError, match="preset_follow"):
        _build({"preset": "calvin_abc_d", "preset_follow": "text"})


def test_record_lists_choices_deviations_and_overrides() -> None:
    cfg = _build({"preset": "simpler_bridge", "model": {"gripper_loss_weight": 1.0}})
    record = preset_record(cfg)
    assert record["name"] == "simpler_bridge"
    assert {c["name"] for c in record["choices"]} == {"lr", "checkpoints", "grad_clip"}
    assert all(c["taken"] == "code" for c in record["choices"])
    assert record["overridden"] == {"model.gripper_loss_weight": {"preset": 0.01, "run": 1.0}}
    assert record["resolved"]["data.options"] == {"bridge_labels": "paper"}
    assert record["deviations"]
    assert all(r.startswith("CladernyJorn/VLM4VLA:") for r in record["references"])
    assert preset_record(_build({})) == {}


def test_every_preset_builds_under_both_sides(tmp_path: Path) -> None:
    for name in PRESETS:
        for follow in ("code", "paper"):
            cfg = _build({"preset": name, "preset_follow": follow})
            assert cfg.preset == name
            assert cfg.model.head_type == "fc_decoder"
    folder = tmp_path / "sft-ckpt"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "paligemma"}')
    assert backbone_family_hint(str(folder)) == "paligemma"
    assert backbone_family_hint("microsoft/kosmos-2-patch14-224") == "kosmos2"
    assert backbone_family_hint("BAAI/RoboBrain2.0-7B") == "qwen"


def test_presets_command_prints_values_choices_and_deviations(capsys: pytest.CaptureFixture[str]) -> None:
    from vla.cli import main

    assert main(["presets", "simpler_bridge", "--follow", "paper"]) == 0
    out = capsys.readouterr().out
    assert "lr = 5e-05" in out
    assert "bridge_labels" in out
    assert "late_close_gripper" in out
    assert "deliberate deviations" in out
    assert main(["presets", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert set(described) == set(PRESETS)
    assert described["calvin_abc_d"]["resolved"]["epochs"] == 5.0
    assert main(["presets", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert main(["train", "out=runs/x", "preset=nope"]) == 2  # the train command's config path names the key
    assert "vla train: preset: unknown preset" in capsys.readouterr().err


def test_a_recipe_stage_takes_the_preset(tmp_path: Path) -> None:
    """The recipe runner builds `vla_train` stages through the same hook: a paper recipe is a preset + paths."""
    from recipes.runner import plan_recipe

    recipe = tmp_path / "calvin.yaml"
    recipe.write_text(
        "vars: {data: /data/task_ABC_D}\n"
        "stages:\n"
        "  vla:\n"
        "    uses: vla_train\n"
        "    preset: calvin_abc_d\n"
        "    out: runs/calvin\n"
        "    data: {path: '${vars.data}'}\n"
    )
    (stage,) = plan_recipe(recipe, ["vla.preset_follow=paper", "vla.model.backbone=Qwen/Qwen3-VL-4B-Instruct"])
    cfg = stage.config
    assert (cfg.steps, cfg.epochs, cfg.model.gripper_loss_weight, cfg.data.path) == (
        30000,
        0.0,
        0.01,
        "/data/task_ABC_D",
    )
    assert cfg.model.backbone == "Qwen/Qwen3-VL-4B-Instruct"
