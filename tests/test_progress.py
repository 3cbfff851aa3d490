"""Progress off a terminal: whole lines at most every N seconds, none for short work; third-party noise off."""

import io
import logging
import os

from datasets_build.progress import LineProgress, progress_bar, quiet_third_party


def test_off_a_terminal_progress_is_whole_lines_every_n_seconds():
    sink = io.StringIO()
    bar = LineProgress(total=5, desc="work", unit="ep", every=0.0, file=sink)
    for _ in range(5):
        bar.update(1)
    bar.close()
    text = sink.getvalue()
    assert "\r" not in text
    assert text.count("\n") == 6  # the start and every update past the interval (0 s here); closing adds none
    assert "work: 100%" in text.splitlines()[-1]
    assert "5/5" in text


def test_short_work_prints_nothing_and_disabled_bars_stay_silent(capsys):
    for _ in progress_bar(range(50), desc="quick", every=3600.0):
        pass
    for _ in progress_bar(range(50), desc="off", enabled=False):
        pass
    assert capsys.readouterr().err == ""  # pytest's stderr is no terminal: the line form, and no line within an hour


def test_quiet_third_party_sets_the_libraries_switches(monkeypatch):
    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "ACCELERATE_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")  # a user's own setting is kept
    quiet_third_party()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert os.environ["ACCELERATE_LOG_LEVEL"] == "error"
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"
    assert logging.getLogger("accelerate.utils.other").level == logging.ERROR
