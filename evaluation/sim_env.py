"""`python -m evaluation sim-env SIM DIR`: a virtual environment for one simulator's workers, with its own pins.

Installs `evaluation/sim_envs/SIM.txt` (what the worker imports, plus the simulator and its pins) into a new venv at
DIR, and the toolkit itself without its dependencies when it is installed rather than run from a checkout (from a
checkout, `evaluation run` puts the source folder on the workers' PYTHONPATH). Prints the
`sim_options.python=...` to give `evaluation run`. Simulators that are not on PyPI (SimplerEnv, calvin_env) are
installed afterwards from their repositories, as their file says. A second call with the same requirements returns
the environment already built; a folder this command did not build is never touched.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from datasets_build import __version__
from datasets_build.errors import ConfigError, OutputExistsError, ToolkitError
from datasets_build.outputs import OVERWRITE_HINT
from evaluation.remote import source_root
from evaluation.sims import SIMULATORS

MARKER = ".vlm4vla-sim-env.json"


@dataclass
class SimEnvConfig:
    """One simulator environment: which simulator, where, from which interpreter, with which extra packages."""

    sim: str = "demo"
    out: str = ""
    python: str = ""  # base interpreter of the new venv ["" = the one running this command]
    extra: list[str] = field(default_factory=list)  # more requirements, e.g. "openpi-client==0.1.2"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.sim not in SIMULATORS:
            raise ConfigError(f"sim: unknown simulator {self.sim!r}; known: {sorted(SIMULATORS)}")
        if not self.out:
            raise ConfigError("out: a folder for the environment is required")


def requirements_text(sim: str) -> str:
    """The simulator's requirements file with its `-r` includes inlined (what gets installed, for the marker)."""
    folder = resources.files("evaluation") / "sim_envs"
    lines = []
    for line in (folder / f"{sim}.txt").read_text().splitlines():
        if line.startswith("-r "):
            lines += (folder / line[3:].strip()).read_text().splitlines()
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def venv_python(folder: Path) -> Path:
    """The interpreter of a venv folder."""
    return folder / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise ToolkitError(f"{what} failed (exit code {result.returncode}): {' '.join(command)}")


def build_sim_env(cfg: SimEnvConfig) -> Path:
    """Create (or find, already built) the environment; returns its interpreter."""
    out = Path(cfg.out)
    requirements = requirements_text(cfg.sim)
    wanted = {
        "sim": cfg.sim,
        "requirements": hashlib.sha256(requirements.encode()).hexdigest(),
        "extra": sorted(cfg.extra),
        "toolkit": None if source_root() else __version__,
    }
    marker = out / MARKER
    if marker.is_file():
        if json.loads(marker.read_text()) == wanted and venv_python(out).exists():
            return venv_python(out)
        if not cfg.overwrite:
            raise OutputExistsError(f"{out}: holds another simulator environment ({OVERWRITE_HINT})")
        shutil.rmtree(out)
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"{out}: exists and was not built by `evaluation sim-env`; choose another folder")
    base = cfg.python or getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", str(out)], "creating the venv")
    python = venv_python(out)
    req_file = out / "requirements-sim.txt"
    req_file.write_text(requirements)
    _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-r", str(req_file), *cfg.extra],
         f"installing the {cfg.sim} requirements")  # fmt: skip
    if wanted["toolkit"] is not None:  # an installed toolkit: the workers import it from the venv
        _run([str(python), "-m", "pip", "install", "--no-deps", f"vlm4vla-toolkit=={__version__}"], "toolkit")
    marker.write_text(json.dumps(wanted, indent=2) + "\n")
    return python
