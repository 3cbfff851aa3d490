"""`vla serve`: openpi's wire format, the server's contract (metadata, errors that keep the connection, API key,
batching across clients, reset), a served tiny checkpoint against in-process `act`, the CLI, and
`evaluation run --policy ws://`. The real `openpi_client` package is driven in tests/test_sim_workers.py (it pins
numpy<2, so it lives in the simulator environment there, not in the toolkit's)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgpack
import numpy as np
import pytest

from datasets_build.errors import ConfigError, ToolkitError
from evaluation.cli import main as evaluation_main
from evaluation.policies import ConstantPolicy
from evaluation.ws_policy import WebsocketPolicy
from tests.serve_fixtures import frames, tiny_checkpoint
from vla import wire
from vla.serve import PolicyServer

ROOT = Path(__file__).resolve().parent.parent


class PromptPolicy:
    """Actions that encode the prompt (its length in x, a step counter in y), recording every batch it saw."""

    chunk_size = 3
    metadata = {"trained_on": "nothing", "cameras": ["static"]}  # noqa: RUF012

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batches: list[int] = []
        self.resets = 0
        self.calls = 0

    def reset(self) -> None:
        self.resets += 1

    def act(self, images: Sequence[np.ndarray], instruction: str) -> np.ndarray:
        return self.act_batch([images], [instruction])[0]

    def act_batch(self, images: Sequence[Sequence[np.ndarray]], instructions: Sequence[str]) -> np.ndarray:
        if any(text == "explode" for text in instructions):
            raise RuntimeError("the model failed")
        time.sleep(self.delay_s)
        self.batches.append(len(instructions))
        self.calls += 1
        out = np.zeros((len(instructions), self.chunk_size, 7), dtype=np.float32)
        for i, (imgs, text) in enumerate(zip(images, instructions, strict=True)):
            out[i, :, 0] = len(text)
            out[i, :, 1] = float(imgs[0].mean())
            out[i, :, 6] = 1.0
        return out


@pytest.fixture
def served() -> Iterator[tuple[PolicyServer, PromptPolicy]]:
    policy = PromptPolicy()
    with PolicyServer(policy, port=0) as server:
        yield server, policy


def _image(value: int = 7, size: int = 32) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


def test_wire_format_is_openpi_msgpack_numpy() -> None:
    message = {"image": _image(), "state": np.arange(3, dtype=np.float64), "n": np.int64(4), "prompt": "pick"}
    raw = wire.packb(message)
    back = wire.unpackb(raw)
    np.testing.assert_array_equal(back["image"], message["image"])
    assert back["image"].dtype == np.uint8
    assert back["state"].dtype == np.float64
    assert back["n"] == 4
    assert isinstance(back["n"], np.int64)
    # the exact layout openpi_client.msgpack_numpy writes: a map with byte keys, dtype.str and the shape
    plain = msgpack.unpackb(raw)
    assert plain["image"] == {b"__ndarray__": True, b"data": bytes(32 * 32 * 3 * [7]), b"dtype": "|u1",
                              b"shape": [32, 32, 3]}  # fmt: skip
    assert plain["n"] == {b"__npgeneric__": True, b"data": 4, b"dtype": "<i8"}
    with pytest.raises(wire.WireError, match="object"):
        wire.packb({"x": np.array([object()])})
    forged = msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]})
    with pytest.raises(wire.WireError, match="refused"):
        wire.unpackb(forged)
    short = msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 5, b"dtype": "<f4", b"shape": [2]})
    with pytest.raises(wire.WireError, match="malformed"):
        wire.unpackb(short)
    with pytest.raises(wire.WireError, match="not a msgpack"):
        wire.unpackb(b"\xc1")


def test_server_contract(served: tuple[PolicyServer, PromptPolicy]) -> None:
    server, _ = served
    client = WebsocketPolicy(server.url)
    meta = client.metadata
    assert client.chunk_size == 3
    assert meta["action_dim"] == 7
    assert meta["action_names"][-1] == "gripper"
    assert meta["trained_on"] == "nothing"  # the policy's own metadata is passed on
    actions = client.act([_image(9)], "pick")
    assert actions.dtype == np.float32
    assert actions.shape == (3, 7)
    assert actions[0, 0] == 4
    assert actions[0, 1] == 9
    batch = client.act_batch([[_image(1)], [_image(2)]], ["a", "bb"])
    assert batch.shape == (2, 3, 7)
    assert batch[:, 0, :2].tolist() == [[1, 1], [2, 2]]

    bad = [
        ({"imgae": _image(), "prompt": "x"}, "unknown keys"),
        ({"image": _image().astype(np.float32), "prompt": "x"}, "uint8"),
        ({"image": np.zeros((8, 8), np.uint8), "prompt": "x"}, r"\(8, 8\)"),
        ({"image": _image(), "prompt": 3}, "prompt"),
        ({"image": _image()}, "prompt"),
        ({"image": _image(), "images": [_image()], "prompt": "x"}, "exactly one"),
        (["not", "a", "map"], "expected a map"),
    ]
    for message, match in bad:
        client._send(message)  # type: ignore[arg-type]
        with pytest.raises(ToolkitError, match=match):
            client._receive("actions")
        assert client.act([_image(3)], "still")[0, 1] == 3  # the connection stays up
    client._ws.send("a text frame")
    with pytest.raises(ToolkitError, match="binary frames"):
        client._receive("actions")
    client._ws.send(b"\xc1garbage")
    with pytest.raises(ToolkitError, match="not a msgpack"):
        client._receive("actions")
    with pytest.raises(ToolkitError, match="the model failed"):
        client.act([_image()], "explode")
    assert client.act([_image(5)], "fine")[0, 1] == 5
    with pytest.raises(ToolkitError, match="the model failed"):  # one bad request of a batch: only it fails...
        client.act_batch([[_image(1)], [_image(2)]], ["explode", "ok"])
    assert client.act([_image(6)], "aligned")[0, :2].tolist() == [7, 6]  # ...and every reply was read
    assert client.act([_image(4), _image(8)], "two cameras")[0, 1] == 4  # several views travel as "images"
    with urllib.request.urlopen(server.url.replace("ws://", "http://") + "/healthz", timeout=10) as response:
        assert response.status == 200
    client.close()


def test_batches_across_clients_and_isolates_failures() -> None:
    policy = PromptPolicy(delay_s=0.05)
    with PolicyServer(policy, port=0, batch_window_s=0.02) as server:
        clients = [WebsocketPolicy(server.url) for _ in range(4)]
        results: dict[int, list[float]] = {}
        failures: list[str] = []

        def work(index: int) -> None:
            got = []
            for step in range(5):
                prompt = "explode" if (index, step) == (3, 2) else "x" * (index + 1)
                try:
                    got.append(float(clients[index].act([_image(step)], prompt)[0, 0]))
                except ToolkitError as exc:
                    failures.append(str(exc))
            results[index] = got

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        stats = dict(server.stats)
    assert [results[i] for i in range(4)] == [[1.0] * 5, [2.0] * 5, [3.0] * 5, [4.0] * 4]
    assert len(failures) == 1
    assert "the model failed" in failures[0]
    assert max(policy.batches) > 1  # requests of several clients went through one act_batch
    assert stats["requests"] == 19
    assert stats["batches"] < 19


def test_reset_reaches_the_policy_only_when_no_other_client_acts(served: tuple[PolicyServer, PromptPolicy]) -> None:
    server, policy = served
    first = WebsocketPolicy(server.url)
    first.act([_image()], "x")
    first.reset()
    assert policy.resets == 1
    watcher = WebsocketPolicy(server.url)  # connected (e.g. for the metadata) but never asks for actions
    first.reset()
    assert policy.resets == 2
    second = WebsocketPolicy(server.url)
    second.act([_image()], "x")
    first.reset()
    second.reset()
    assert policy.resets == 2  # one shared policy: a reset from one client must not disturb another one acting
    second.close()
    time.sleep(0.2)
    first.reset()
    assert policy.resets == 3
    watcher.close()


def test_api_key_refuses_clients_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    with PolicyServer(PromptPolicy(), port=0, api_key="s3cret") as server:
        with pytest.raises(ConfigError, match="HTTP 401"):
            WebsocketPolicy(server.url)
        with pytest.raises(ConfigError, match="HTTP 401"):
            WebsocketPolicy(server.url, api_key="wrong")
        monkeypatch.setenv("MY_KEY", "s3cret")
        assert WebsocketPolicy.from_env(server.url, "MY_KEY").act([_image()], "x").shape == (3, 7)
        monkeypatch.setenv("VLA_API_KEY", "s3cret")
        assert WebsocketPolicy.from_env(server.url).chunk_size == 3
    with pytest.raises(ConfigError, match="cannot reach"):
        WebsocketPolicy(server.url)
    with pytest.raises(ConfigError, match="ws://"):
        WebsocketPolicy("http://localhost:1")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.mark.slow
def test_served_checkpoint_matches_in_process_act(checkpoint: Path) -> None:
    from vla.policy import Policy

    policy = Policy.from_pretrained(checkpoint, device="cpu")
    images = frames(2, size=224)
    expected = [policy.act([image], "pick up the red block") for image in images]
    with PolicyServer(policy, port=0) as server:
        client = WebsocketPolicy(server.url)
        assert client.metadata["backbone"].endswith("kosmos-2-patch14-224")
        assert client.metadata["image_size"] == policy.model.config.image_size
        assert client.chunk_size == 2
        for image, want in zip(images, expected, strict=True):
            np.testing.assert_allclose(client.act([image], "pick up the red block"), want, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_vla_serve_cli(checkpoint: Path, stop: signal.Signals) -> None:
    """Served, then stopped cleanly by Ctrl-C or SIGTERM, even started as a background job would be (SIGINT
    inherited ignored: the suite itself may run under `nohup ... &`)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SERVE_KEY": "k-123"}
    command = [sys.executable, "-m", "vla", "serve", str(checkpoint), "--port", "0", "--api-key-env", "SERVE_KEY",
               "--device", "cpu"]  # fmt: skip
    background = ["sh", "-c", "trap '' INT; exec \"$@\"", "sh", *command]  # SIGINT ignored, as under `cmd &`
    process = subprocess.Popen(background, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"serving {checkpoint} on ws://127.0.0.1:"), line + (process.stderr.read() or "")
        url = line.split(" on ")[1].split()[0]
        with pytest.raises(ConfigError, match="HTTP 401"):
            WebsocketPolicy(url)
        client = WebsocketPolicy(url, api_key="k-123")
        assert client.metadata["checkpoint"] == str(checkpoint)
        assert client.act(frames(1)[0:1], "pick").shape == (2, 7)
        client.close()
    finally:
        process.send_signal(stop)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, err
    assert "served 1 requests in 1 batches" in out


def test_evaluation_run_through_a_policy_server(tmp_path: Path) -> None:
    policy = ConstantPolicy(action=[0, 0, 0.01, 0, 0, 0, 1], chunk_size=2)
    options = ["sim_options.tasks=[pick_block]", "sim_options.max_steps=6", "--trials", "2"]
    local = tmp_path / "local"
    from evaluation.run import RunConfig, run

    run(RunConfig(sim="demo", policy="zero", out=str(local), trials=2, progress=False,
                  sim_options={"tasks": ["pick_block"], "max_steps": 6}), policy=policy)  # fmt: skip
    with PolicyServer(policy, port=0) as server:
        for workers in ("1", "2"):
            out = tmp_path / f"served-{workers}"
            args = ["run", "--sim", "demo", "--policy", server.url, "--out", str(out), "--workers", workers]
            assert evaluation_main([*args, *options]) == 0
            assert _records(out) == _records(local)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy"] == server.url
    assert summary["policy_server"]["chunk_size"] == 2  # what the server said it serves


def _records(out: Path) -> list[tuple[str, int, bool]]:
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    return sorted((r["key"], r["steps"], r["success"]) for r in rows)
