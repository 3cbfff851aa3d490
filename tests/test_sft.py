"""SFT stage on tiny Qwen-VL models under their real Hub ids: training from project shards, assistant-only
labels, freezing, LoRA, resume, checkpoint folder + card, bad input, evaluate and the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import TrainerCallback

from datasets_build.checkpoint import CheckpointFolder
from datasets_build.configs import build_config
from datasets_build.errors import ConfigError, DataError, OutputExistsError
from datasets_build.shards import CARD_NAME, ShardSet
from sft.cli import main
from sft.collator import SFTCollator
from sft.config import SFTTrainConfig
from sft.data import open_sources, stream_dataset
from sft.train import build_trainer, train

QWEN25 = "Qwen/Qwen2.5-VL-3B-Instruct"
QWEN3 = "Qwen/Qwen3-VL-2B-Instruct"
QWEN3_MOE = "Qwen/Qwen3-VL-30B-A3B-Instruct"


@pytest.fixture(scope="module")
def backbones() -> dict[str, Path]:
    from datasets_build.tiny_models import install_tiny_backbones

    return install_tiny_backbones(ids=[QWEN25, QWEN3, QWEN3_MOE])


@pytest.fixture(scope="module")
def corpora(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from datasets_build.corpora import BuildConfig, build_corpus

    root = tmp_path_factory.mktemp("sft_corpora")
    out = {}
    for name, n in (("robo2vlm", 24), ("robopoint", 16)):
        out[name] = root / name
        build_corpus(BuildConfig(name=name, input=str(demo_dir), out=str(out[name]), max_samples=n))
    return out


def make_cfg(corpora: dict[str, Path], out: Path, model: str = QWEN25, **layers: Any) -> SFTTrainConfig:
    base = {
        "model": model,
        "data": [{"path": str(corpora["robo2vlm"])}, {"path": str(corpora["robopoint"]), "weight": 0.5}],
        "output_dir": str(out),
        "shuffle_buffer": 8,
        "trainer": {"max_steps": 2, "save_steps": 100, "logging_steps": 1, "learning_rate": 1e-3},
    }
    return build_config(SFTTrainConfig, base, layers, where="test")


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_labels_cover_only_the_assistant_answer(backbones, corpora):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(QWEN25)
    stream = stream_dataset(open_sources(make_cfg(corpora, Path("x")).data), 0, 1)
    rows = [r for _, r in zip(range(4), stream, strict=False)]
    batch = SFTCollator(processor)(rows)
    for i, row in enumerate(rows):
        answer = row["messages"][-1]["content"][0]["text"]
        labels = batch["labels"][i]
        kept = batch["input_ids"][i][labels != -100]
        assert processor.tokenizer.decode(kept) == answer + "<|im_end|>\n"
        assert torch.equal(labels[labels != -100], kept)
    assert "task" in rows[0]
    assert rows[0]["task"].split("/")[0] in ("robo2vlm", "robopoint")


@pytest.mark.slow
def test_train_cli_writes_a_loadable_checkpoint_folder(backbones, corpora, tmp_path, capsys):
    recipe = tmp_path / "sft.yaml"
    cfg = make_cfg(corpora, tmp_path / "run")
    from datasets_build.configs import config_to_dict

    recipe.write_text(yaml.safe_dump(config_to_dict(cfg)))
    overrides = ["trainer.max_steps=3", "trainer.save_steps=2", "trainer.save_total_limit=1"]
    assert main(["train", str(recipe), *overrides]) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = json.loads("\n".join(lines[lines.index("{") :]))
    final = Path(summary["checkpoint"])
    assert summary["steps"] == 3
    folder = CheckpointFolder.inspect(final)
    assert folder.card is not None
    assert folder.recipe is not None
    card = ModelCard.load(final / "README.md")
    assert card.data.base_model == QWEN25
    text = card.text
    for name in ("robo2vlm", "robopoint"):
        digest = __import__("hashlib").sha256((corpora[name] / CARD_NAME).read_bytes()).hexdigest()
        assert digest in text
    assert "vision_tower" in text
    assert "final_loss" in text
    assert yaml.safe_load((final / "recipe.yaml").read_text())["trainer"]["max_steps"] == 3
    # the periodic checkpoints (every 2 steps and the last, keep 1) also carry the recipe and the card
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-3"]
    assert (checkpoints[0] / "README.md").is_file()
    assert (checkpoints[0] / "recipe.yaml").is_file()
    # logs: loss, learning rate, tokens/s and a loss per task name
    history = json.loads((checkpoints[0] / "trainer_state.json").read_text())["log_history"]
    logged = {k for entry in history for k in entry}
    assert {"loss", "learning_rate", "tokens_per_second"} <= logged
    task_keys = {k for k in logged if k.startswith("loss/")}
    assert task_keys
    assert all(k.split("/")[1] in ("robo2vlm", "robopoint") for k in task_keys)
    code = (
        "import sys, torch\n"
        "from transformers import AutoModelForImageTextToText, AutoProcessor\n"
        f"m = AutoModelForImageTextToText.from_pretrained({str(final)!r})\n"
        f"p = AutoProcessor.from_pretrained({str(final)!r})\n"
        "assert p.chat_template\n"
        "assert not any(k.split('.')[0] in ('sft', 'datasets_build', 'vla') for k in sys.modules)\n"
        "print(type(m).__name__, sum(x.numel() for x in m.parameters()))\n"
    )
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Qwen2_5_VLForConditionalGeneration")
    # trained weights differ from the base model's
    base = load_file(backbones[QWEN25] / "model.safetensors")
    trained = load_file(final / "model.safetensors")
    assert any(not torch.equal(base[k], trained[k]) for k in base)


@pytest.mark.parametrize("model", [QWEN3, QWEN3_MOE])
def test_train_qwen3_families(backbones, corpora, tmp_path, model):
    summary = train(make_cfg(corpora, tmp_path / "run", model=model))
    assert summary["steps"] == 2
    assert torch.isfinite(torch.tensor(summary["metrics"]["final_loss"]))
    CheckpointFolder.inspect(summary["checkpoint"])


@pytest.mark.parametrize("group", ["vision_tower", "projector", "word_embeddings", "llm"])
def test_frozen_group_stays_bit_identical(backbones, corpora, tmp_path, group):
    from datasets_build.vlm_families import MODULE_PATHS

    cfg = make_cfg(corpora, tmp_path / "run", freeze={group: True}, trainer={"weight_decay": 0.1})
    run = build_trainer(cfg, verbose=False)
    paths = MODULE_PATHS[run.loaded.family]
    prefix = {"vision_tower": paths.vision_tower, "projector": paths.projector}.get(group)
    prefix = prefix or {"word_embeddings": paths.word_embeddings, "llm": paths.language_model}[group]
    before = snapshot(run.trainer.model)
    run.trainer.train()
    after = snapshot(run.trainer.model)
    frozen = [n for n in before if n.startswith(prefix + ".")]
    assert frozen
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert any(not torch.equal(before[n], after[n]) for n in before if n not in frozen)
    assert group in run.frozen
    assert {"llm": "language_model"}.get(group, group) in run.table


@pytest.mark.slow
def test_bf16_stored_backbone_trains_fp32_masters(backbones, corpora, tmp_path):
    """`trainer.bf16`: fp32 masters in the optimizer and the resume state, bf16 compute, frozen parts and the final
    folder in bf16; the table groups the vision tower as `vla train` does."""
    from safetensors import safe_open

    from vla.configuration_vla import VLAConfig
    from vla.modeling_vla import VLAPolicyModel

    layers = {"freeze": {"vision_tower": True}, "trainer": {"bf16": True, "max_steps": 2, "save_steps": 2}}
    summary = train(make_cfg(corpora, tmp_path / "run", **layers))
    assert summary["optimizer_param_dtypes"] == ["fp32"]
    groups = {row["group"]: row for row in summary["parameter_groups"]}
    assert groups["vision_tower"]["trainable"] == 0
    assert groups["vision_tower"]["stored"] == "bf16"  # frozen under bf16 compute: kept as stored
    assert groups["language_model"]["stored"] == "fp32"
    assert {row["compute"] for row in groups.values()} == {"bf16"}
    saved = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert saved["parameter_groups"] == summary["parameter_groups"]
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-2"
    with safe_open(str(checkpoint / "model.safetensors"), "pt") as weights:
        dtypes = {k: weights.get_slice(k).get_dtype() for k in weights.keys()}  # noqa: SIM118
    # (keys in the released checkpoints' naming: `model.layers.*` is the LLM, `visual.*` the vision tower)
    assert {d for k, d in dtypes.items() if k.startswith("model.layers.")} == {"F32"}
    assert {d for k, d in dtypes.items() if k.startswith("visual.")} == {"BF16"}
    optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    moments = [t for state in optimizer["state"].values() for k, t in state.items() if k.startswith("exp_avg")]
    assert moments
    assert {t.dtype for t in moments} == {torch.float32}
    final = Path(summary["checkpoint"])
    with safe_open(str(final / "model.safetensors"), "pt") as weights:
        assert {weights.get_slice(k).get_dtype() for k in weights.keys()} == {"BF16"}  # noqa: SIM118
    assert json.loads((final / "config.json").read_text())["dtype"] == "bfloat16"
    assert "stored" in ModelCard.load(final / "README.md").text
    # one grouping for both stages: Qwen's merger counted as the projector, not inside the vision tower
    vla_rows = {r.group: r for r in VLAPolicyModel.build(VLAConfig(backbone=QWEN25)).parameter_groups()}
    for name in ("vision_tower", "projector", "language_model", "word_embeddings"):
        assert vla_rows[name].parameters == groups[name]["parameters"], name


def test_lora_presets_target_and_merge(backbones, corpora, tmp_path):
    from sft.freezing import lora_targets

    run = build_trainer(make_cfg(corpora, tmp_path / "a", lora={"enabled": True, "preset": "llm", "r": 4}), False)
    names = [n for n, _ in run.trainer.model.named_parameters() if "lora_" in n]
    assert names
    assert all(".language_model." in n for n in names)
    assert all(not p.requires_grad for n, p in run.trainer.model.named_parameters() if "lora_" not in n)
    model = run.loaded.model
    vision_targets = lora_targets(model, "qwen2_5_vl", "llm_vision")
    assert any(t.startswith("model.visual.") for t in vision_targets)
    assert set(lora_targets(model, "qwen2_5_vl", "llm")) < set(vision_targets)
    summary = train(make_cfg(corpora, tmp_path / "b", lora={"enabled": True, "preset": "llm_vision", "r": 4}))
    weights = load_file(Path(summary["checkpoint"]) / "model.safetensors")
    assert not any("lora" in k for k in weights)
    assert weights.keys() == load_file(backbones[QWEN25] / "model.safetensors").keys()


class StopAt(TrainerCallback):
    """Simulates an interruption after `step` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run(backbones, corpora, tmp_path):
    layers = {"trainer": {"max_steps": 4, "save_steps": 2, "weight_decay": 0.01}}
    whole = train(make_cfg(corpora, tmp_path / "whole", **layers))
    run = build_trainer(make_cfg(corpora, tmp_path / "cut", **layers), verbose=False)
    run.trainer.add_callback(StopAt(2))
    run.trainer.train()
    assert run.trainer.state.global_step == 2
    assert (tmp_path / "cut" / "checkpoints" / "checkpoint-2").is_dir()
    resumed = train(make_cfg(corpora, tmp_path / "cut", resume=True, **layers))
    assert resumed["steps"] == 4
    a = load_file(Path(whole["checkpoint"]) / "model.safetensors")
    b = load_file(Path(resumed["checkpoint"]) / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- bad input: one line, exit 2, before any step ------------------------------------------------------
def _cli_error(capsys: Any, recipe: Path, *overrides: str) -> str:
    assert main(["train", str(recipe), *overrides]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1
    assert lines[-1] == errors[0]
    return errors[0]


def test_bad_input_fails_before_training(backbones, corpora, tmp_path, capsys):
    from datasets_build.configs import config_to_dict

    recipe = tmp_path / "sft.yaml"
    recipe.write_text(yaml.safe_dump(config_to_dict(make_cfg(corpora, tmp_path / "run"))))
    # a shard set without its card
    nocard = tmp_path / "nocard"
    shutil.copytree(corpora["robopoint"], nocard)
    (nocard / CARD_NAME).unlink()
    assert "dataset card not found" in _cli_error(capsys, recipe, f"data=[{{path: {nocard}}}]")
    # a shard whose bytes no longer match the card's sha256 (same size)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(corpora["robopoint"], corrupt)
    tar = ShardSet(corrupt).shards[0]
    raw = bytearray(tar.read_bytes())
    raw[600] ^= 0xFF
    tar.write_bytes(bytes(raw))
    assert "sha256" in _cli_error(capsys, recipe, f"data=[{{path: {corrupt}}}]", "overwrite=true")
    # a freeze flag naming a module this family lacks
    assert "model.no_such_module" in _cli_error(
        capsys, recipe, "freeze.modules=[model.no_such_module]", "overwrite=true"
    )
    # an unknown key, and an existing output folder
    assert "unknown key" in _cli_error(capsys, recipe, "trainer.nope=1")
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "run" / "x").write_text("x")
    assert "not empty" in _cli_error(capsys, recipe)
    assert not (tmp_path / "run" / "checkpoints").exists()
    with pytest.raises(OutputExistsError):
        build_trainer(make_cfg(corpora, tmp_path / "run"))
    with pytest.raises(DataError):
        open_sources(make_cfg(corpora, tmp_path / "y", data=[{"path": str(nocard)}]).data)


def test_missing_engine_package_fails_before_anything_loads(corpora, tmp_path, monkeypatch):
    import datasets_build.launch

    missing = ("no_deepspeed_here", "deepspeed", "deepspeed")
    monkeypatch.setitem(datasets_build.launch.OPTIONAL_PACKAGES, "deepspeed", missing)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    cfg = make_cfg(corpora, tmp_path / "run", model="no-such-org/no-such-model")
    with pytest.raises(ConfigError, match=r"needs the `deepspeed` package.*\[deepspeed\]"):
        build_trainer(cfg, verbose=False)
    assert not (tmp_path / "run").exists()
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    with pytest.raises(ConfigError, match="attn_implementation"):
        make_cfg(corpora, tmp_path / "run", attn_implementation="flash")


def test_model_without_chat_template_is_refused(backbones, corpora, tmp_path):
    folder = tmp_path / "no_template"
    shutil.copytree(backbones[QWEN25], folder)
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    for name in ("processor_config.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            data = json.loads(path.read_text())
            data.pop("chat_template", None)
            path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="no chat template"):
        build_trainer(make_cfg(corpora, tmp_path / "run", model=str(folder)))


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("train", "evaluate", "push"))
    for cmd in ("train", "evaluate", "push"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "usage" in capsys.readouterr().out


def test_evaluate_scores_per_task(backbones, corpora, tmp_path, capsys):
    from sft.evaluate import EvaluateConfig, evaluate

    out = tmp_path / "eval"
    args = ["evaluate", str(backbones[QWEN25]), "--data", str(corpora["robo2vlm"]), "--data", str(corpora["robopoint"])]
    assert main([*args, "--max-samples", "6", "--max-new-tokens", "8", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("| task | count |")
    assert "| all | 6 |" in table
    result = json.loads((out / "eval.json").read_text())
    assert result["samples"] == 6
    assert result["per_task"]["all"]["count"] == 6
    assert sum(v["count"] for k, v in result["per_task"].items() if k != "all") == 6
    assert (out / "eval.md").read_text().strip() == table.strip()
    first = result["predictions"][0]
    assert first["task"].startswith("robo2vlm/")
    assert isinstance(first["prediction"], str)
    assert first["scores"]
    # the reference answer scores perfectly under the same parsers (the scorer is wired the right way round)
    from datasets_build.answers import score_answer
    from sft.evaluate import split_turns

    for sample in list(ShardSet(corpora["robo2vlm"]))[:8]:
        _, reference = split_turns(sample)
        scores = score_answer(reference, reference, sample.meta)
        assert scores["accuracy"] == 1.0
        assert scores["parsed"] == 1.0
        wrong = "A" if reference.strip() != "A" else "B"
        assert score_answer(wrong, reference, sample.meta)["accuracy"] == 0.0
    with pytest.raises(ConfigError):
        evaluate(EvaluateConfig(checkpoint=str(backbones[QWEN25]), data=[]))
