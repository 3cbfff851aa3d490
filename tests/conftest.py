"""Session-wide test settings: never touch the network, keep HF caches in a temporary folder.

Set at import time, before any test module imports huggingface_hub (which reads them once).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_hub import hub  # noqa: F401  (the loopback Hub fixture for push tests)

_HF_HOME = tempfile.mkdtemp(prefix="vlm4vla-hf-")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_DATASETS_CACHE"] = os.path.join(_HF_HOME, "datasets")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
if shutil.which("nvidia-smi") is None:
    # DeepSpeed (the `deepspeed` extra), imported by accelerate when a model is saved, logs its accelerator
    # auto-detection to stdout on machines without a GPU, into the CLIs' JSON; naming the accelerator silences it.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(autouse=True, scope="session")
def _clean_hf_home() -> Iterator[None]:
    """Remove the temporary HF cache after the session."""
    yield
    shutil.rmtree(_HF_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state() -> Iterator[None]:
    """Forget accelerate's process-wide state after each test (a Trainer's mixed precision would otherwise stick
    to every later in-process training run, as in one long-lived Python process)."""
    yield
    import sys

    if "accelerate.state" in sys.modules:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(True)  # and the PartialState under it
        GradientState._reset_state()


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six expert episodes of the demo sim (every task family once), recorded once per test session."""
    from datasets_build.demo_episodes import DemoEpisodesConfig, record_demo_episodes

    out = tmp_path_factory.mktemp("demo") / "episodes"
    record_demo_episodes(DemoEpisodesConfig(out=str(out), episodes=6, seed=0))
    return out


@pytest.fixture(scope="session")
def demo_episodes(demo_dir: Path) -> list[Any]:
    """The recorded demo episodes, read back through the demo source."""
    from datasets_build.sources import open_source

    return list(open_source("demo", demo_dir).episodes())
