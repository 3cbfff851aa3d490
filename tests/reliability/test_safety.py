"""Safety: no code runs from data (pickles, `torch.load`, remote model code), and Hub tokens never reach the console
or any file a command writes.

The audit walks the syntax tree of every project module: unpickling only in `datasets_build.safe_pickle`'s
restricted unpickler, `torch.load` only with `weights_only=True`, no `allow_pickle=True`, no `trust_remote_code`
other than False, no `yaml.load`/`eval`/`exec`, no accelerate custom states (reloaded with `weights_only=False`).
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest
import torch

from datasets_build.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("datasets_build", "sft", "vla", "evaluation", "recipes", "benchmarks")
UNPICKLER_HOME = ROOT / "datasets_build" / "safe_pickle.py"
TOKEN = "hf_reliabilityFakeToken0123456789"


def _dotted(node: ast.AST) -> str:
    """`a.b.c` of a Name/Attribute chain ('' for anything else)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def audit_source(text: str, path: Path) -> list[str]:
    """Each unsafe loading call in one module, as 'path:line: what'."""
    problems = []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        where = f"{path}:{node.lineno}"
        if (
            name.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "joblib")
            and last in ("load", "loads", "Unpickler")
            and path != UNPICKLER_HOME
        ):
            problems.append(f"{where}: {name} (use datasets_build.safe_pickle)")
        if name == "torch.load" and not _is_const(_keyword(node, "weights_only"), True):
            problems.append(f"{where}: torch.load without weights_only=True")
        if _is_const(_keyword(node, "allow_pickle"), True):
            problems.append(f"{where}: {name}(allow_pickle=True)")
        flag = _keyword(node, "trust_remote_code")
        if flag is not None and not _is_const(flag, False):
            problems.append(f"{where}: {name}(trust_remote_code=...) not False")
        elif (
            flag is None
            and last == "from_pretrained"
            and name.split(".")[-2:-1] != []
            and name.split(".")[-2].startswith("Auto")
        ):
            problems.append(f"{where}: {name} without trust_remote_code=False (transformers would ask on a tty)")
        builtin = isinstance(node.func, ast.Name) and name in ("eval", "exec")
        if builtin or name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            problems.append(f"{where}: {name}")
        if last == "register_for_checkpointing":
            problems.append(f"{where}: accelerate custom state (reloaded with weights_only=False)")
    return problems


def test_no_module_loads_data_unsafely() -> None:
    problems = []
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 100
    for path in files:
        problems += audit_source(path.read_text(encoding="utf-8"), path)
    assert problems == []


def test_the_audit_finds_each_kind_of_unsafe_call() -> None:
    sample = """
import pickle, torch, numpy as np, yaml
pickle.loads(b"")
torch.load("x")
torch.load("x", weights_only=False)
np.load("x", allow_pickle=True)
AutoModel.from_pretrained("x", trust_remote_code=True)
AutoModel.from_pretrained("x", trust_remote_code=cfg.trust)
AutoConfig.from_pretrained("x")
AutoConfig.from_pretrained("x", trust_remote_code=False)
yaml.load("a")
eval("1")
model.eval()
Model().eval()
accelerator.register_for_checkpointing(scheduler)
torch.load("x", weights_only=True)
np.load("x")
"""
    found = audit_source(sample, Path("sample.py"))
    assert len(found) == 10, found


def test_scheduler_state_is_json_and_an_old_pickled_state_is_not_executed(tmp_path: Path) -> None:
    from vla.engines import LEGACY_SCHEDULER_STATE, SCHEDULER_STATE, load_scheduler, save_scheduler

    def scheduler() -> torch.optim.lr_scheduler.LambdaLR:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))

    trained = scheduler()
    for _ in range(3):
        trained.optimizer.step()
        trained.step()
    save_scheduler(trained, tmp_path)
    json.loads((tmp_path / SCHEDULER_STATE).read_text())
    resumed = scheduler()
    load_scheduler(resumed, tmp_path)
    assert resumed.last_epoch == 3
    assert resumed.get_last_lr() == trained.get_last_lr()

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save({"last_epoch": Payload()}, legacy / LEGACY_SCHEDULER_STATE)
    with pytest.raises(Exception, match="Weights only load failed"):
        load_scheduler(scheduler(), legacy)
    assert not (tmp_path / "ran").exists()


def test_remote_code_in_a_model_folder_is_never_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sft.model import load_model

    marker = tmp_path / "ran"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n"
        "from transformers import PretrainedConfig\nclass EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    )
    (folder / "config.json").write_text(
        json.dumps({"model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig"}})
    )
    with pytest.raises(ConfigError, match="contains custom code"):
        load_model(str(folder))
    assert not marker.exists()
    assert "[y/N]" not in capsys.readouterr().out  # refused outright: no prompt a user could answer "y" to


def _all_text_under(folder: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


@pytest.mark.slow  # a corpus build, stats, inspect, a push, an evaluation and a recipe plan: ~30 s on 2 cores
def test_a_hub_token_is_never_printed_or_written(
    hub, demo_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from datasets_build.cli import main as build_main
    from evaluation.cli import main as eval_main
    from recipes.runner import main as recipe_main

    handler, endpoint = hub
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.setenv(name, TOKEN)
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "corpus"
    codes = [
        build_main(["build", "robo2vlm", "--source", "demo", "--input", str(demo_dir), "--out", str(corpus),
                    "--max-samples", "6"]),
        build_main(["stats", "demo", str(demo_dir), "--out", str(tmp_path / "stats.json")]),
        build_main(["inspect", "demo", str(demo_dir), "--json"]),
        build_main(["push", str(corpus), "org/token-check", f"endpoint={endpoint}"]),
        eval_main(["run", "--sim", "demo", "--policy", "zero", "--out", str(tmp_path / "eval"), "--trials", "1"]),
        recipe_main(["demo", "--dry-run", f"vars.run_dir={tmp_path / 'runs'}"]),
    ]  # fmt: skip
    assert codes == [0] * len(codes)
    assert any(r.get("auth") == f"Bearer {TOKEN}" for r in handler.log)  # the token was really in use
    console = capfd.readouterr()
    assert TOKEN not in console.out + console.err
    written = _all_text_under(tmp_path) + _all_text_under(Path(os.environ["HF_HOME"]))
    names = {p.name for p, _ in written}
    assert {"dataset_card.json", "stats.json", "summary.json"} <= names, names
    assert [str(p) for p, data in written if TOKEN.encode() in data] == []
