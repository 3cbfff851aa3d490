"""Unexpected failures (model bugs, corrupt weights, simulator crashes) still end in one line, but their full
traceback is kept in a log file inside the output folder and the line names it; expected (toolkit) errors stay
one line without a log."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets_build.crash_log import CRASH_DIR, first_line, write_traceback
from datasets_build.errors import ConfigError, ToolkitError


def _named_log(message: str) -> Path:
    assert "; traceback: " in message, message
    assert "\n" not in message
    return Path(message.rsplit("; traceback: ", 1)[1])


def test_write_traceback_in_the_folder_or_a_temp_folder(tmp_path: Path) -> None:
    log = write_traceback(tmp_path / "out", "probe", "Traceback (most recent call last):\n  boom\n")
    assert log.parent == tmp_path / "out" / CRASH_DIR
    assert log.read_text().startswith("Traceback")
    assert [p.name for p in log.parent.iterdir()] == [log.name]  # no temporary file left
    blocked = tmp_path / "file"
    blocked.write_text("x")  # not a folder: the log goes to the temp folder instead
    assert write_traceback(blocked, "probe", "t").is_file()
    assert first_line(ValueError("first\nsecond")) == "ValueError: first"


def test_a_checkpoint_that_crashes_the_model_code_keeps_its_traceback(tmp_path: Path) -> None:
    from evaluation.policies import load_policy
    from tests.serve_fixtures import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "ckpt")
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated: safetensors raises its own error class
    out = tmp_path / "results"
    with pytest.raises(ConfigError) as info:
        load_policy(str(checkpoint), log_dir=out)
    log = _named_log(str(info.value))
    assert log.parent == out / CRASH_DIR
    text = log.read_text()
    assert "Traceback (most recent call last)" in text
    assert "safetensors" in text.lower()


def test_a_missing_checkpoint_is_a_plain_one_line_error(tmp_path: Path) -> None:
    from evaluation.policies import load_policy

    with pytest.raises(ToolkitError) as info:
        load_policy(str(tmp_path / "nope"), log_dir=tmp_path / "results")
    assert "traceback:" not in str(info.value)
    assert not (tmp_path / "results").exists()


def test_a_simulator_crash_in_a_worker_keeps_its_traceback(tmp_path: Path) -> None:
    from evaluation.run import _Slot

    out = tmp_path / "results"
    slot = _Slot("demo", {}, remote=True, log_dir=out)
    try:
        with pytest.raises(ToolkitError) as info:
            slot.call("reset", {"not": "a trial"})  # the worker's simulator code raises on it
        log = _named_log(str(info.value))
        assert log.parent == out / CRASH_DIR
        assert "Traceback (most recent call last)" in log.read_text()
        assert "evaluation/run.py" in log.read_text()  # the worker's own frames, not the parent's
        assert slot.call("trials", 1)  # the worker survives and still answers
    finally:
        slot.close()
