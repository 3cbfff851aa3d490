"""A simulator worker: runs in the simulator's own environment and plays the episodes `evaluation run` hands it.

`python -m evaluation.worker` (started by `evaluation run` with `sim_options.python=/path/to/env/bin/python`) reads
msgpack messages on stdin and answers on stdout; `python -m evaluation.worker --listen HOST:PORT` serves the same
messages on TCP, for workers started by hand (a container, another node) that `evaluation run` reaches with
`sim_options.connect=[HOST:PORT, ...]`. Messages: `open` (build the adapter, connect to the policy server),
`adapter` (a question such as its trials), `episode` (one trial, closed loop with the same rules as an
in-process run), `environment` (Python and package versions), `close`. Every reply is {"ok": value} or
{"error": one line, "traceback": text}.

Imports numpy, msgpack, websockets, the simulator and the project's adapters only (no torch, no transformers),
so the environment can keep the simulator's own pins (SimplerEnv: numpy<2, gymnasium<1.0; CALVIN: gym 0.26).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tqdm import tqdm

from evaluation.protocol import EpisodeRecord
from evaluation.run import RunConfig, _Rollouts, _Slot
from evaluation.sims import Trial
from evaluation.ws_policy import WebsocketPolicy
from vla import wire


def environment_report() -> dict[str, Any]:
    """Python and the versions of every distribution imported so far: what the simulator ran with."""
    owners = metadata.packages_distributions()
    names = {dist for module in list(sys.modules) for dist in owners.get(module.partition(".")[0], [])}
    versions = {name: _version(name) for name in sorted(names)}
    return {"python": sys.version.split()[0], "executable": sys.executable, "packages": versions}


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


class _Capture:
    """Stands in for the run's episode log: keeps the finished record (and its video frames) for the reply."""

    def __init__(self) -> None:
        self.records: list[EpisodeRecord] = []

    def append(self, record: EpisodeRecord) -> None:
        self.records.append(record)


class _WorkerRollouts(_Rollouts):
    """The runner's own rollout loop on one environment; video frames go back to the caller instead of a file."""

    frames: list[np.ndarray] | None = None

    def _save_video(self, trial: Trial, frames: list[np.ndarray]) -> None:
        self.frames = list(frames)


class WorkerSession:
    """One simulator adapter and one policy-server connection, opened by the `open` message."""

    def __init__(
        self,
        sim: str,
        options: dict[str, Any],
        policy_url: str,
        api_key_env: str = "",
        chunk_mode: str = "full",
        video: int = 0,
    ) -> None:
        self.cfg = RunConfig(sim=sim, policy=policy_url, out="-", chunk_mode=chunk_mode, video=video, progress=False)
        self.slot = _Slot(sim, options, remote=False)
        try:
            self.policy = WebsocketPolicy.from_env(policy_url, api_key_env)
        except BaseException:
            self.slot.close()
            raise
        self.log = _Capture()
        self.rollouts = _WorkerRollouts(self.cfg, self.policy, [self.slot], self.log, Path("."))  # type: ignore[arg-type]

    def hello(self) -> dict[str, Any]:
        """What the runner needs to know about this worker."""
        return {
            "action_dim": self.slot.action_dim,
            "max_steps": self.slot.max_steps,
            "chunk_size": self.policy.chunk_size,
            "environment": environment_report(),
        }

    def adapter(self, command: str, argument: Any) -> Any:
        """An adapter question the runner asks of one environment (`trials`, ...), answered as by `_Slot.call`;
        trials travel as mappings."""
        if command in ("reset", "step"):
            raise RuntimeError(f"{command!r} is played inside 'episode', not asked for")
        value = self.slot.call(command, argument)
        return [asdict(t) for t in value] if command == "trials" else value

    def episode(self, trial: dict[str, Any]) -> dict[str, Any]:
        """Play one trial to its end; the record, the policy time and steps it took, and video frames if asked."""
        policy_s, steps = self.rollouts.policy_s, self.rollouts.steps
        self.rollouts.frames = None
        self.rollouts.run(deque([Trial(**trial)]), tqdm(disable=True))
        record = self.log.records.pop()
        return {
            "record": record.to_dict(),
            "policy_s": self.rollouts.policy_s - policy_s,
            "steps": self.rollouts.steps - steps,
            "frames": np.stack(self.rollouts.frames) if self.rollouts.frames else None,
        }

    def close(self) -> None:
        """Close the simulator and the connection."""
        self.policy.close()
        self.slot.close()


def _handle(session: WorkerSession | None, message: Any) -> tuple[WorkerSession | None, Any]:
    command = message.get("cmd") if isinstance(message, dict) else None
    if command == "open":
        if session is not None:
            session.close()
        session = WorkerSession(**message["args"])
        return session, session.hello()
    if session is None:
        raise RuntimeError(f"{command!r} before 'open'")
    if command == "adapter":
        return session, session.adapter(str(message["question"]), message.get("argument"))
    if command == "episode":
        return session, session.episode(message["trial"])
    if command == "environment":  # asked again after episodes: simulators import most of their stack lazily
        return session, environment_report()
    raise RuntimeError(f"unknown command {command!r}")


def serve_controller(reader: BinaryIO, writer: BinaryIO) -> None:
    """Answer one controller's messages until `close` or end of input."""
    session: WorkerSession | None = None
    messages: Iterator[Any] = iter(wire.stream_unpacker(reader))
    try:
        for message in messages:
            if isinstance(message, dict) and message.get("cmd") == "close":
                break
            try:
                session, value = _handle(session, message)
                reply: dict[str, Any] = {"ok": value}
            except Exception as exc:
                text = (str(exc).strip().splitlines() or [""])[0]
                reply = {"error": f"{type(exc).__name__}: {text}", "traceback": traceback.format_exc()}
                print(reply["traceback"], file=sys.stderr, flush=True)
            writer.write(wire.packb(reply))
            writer.flush()
    finally:
        if session is not None:
            session.close()


def _stdio() -> tuple[BinaryIO, BinaryIO]:
    """The protocol on the original stdin/stdout; whatever the simulator prints goes to stderr instead."""
    reader = os.fdopen(os.dup(0), "rb")
    writer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # pybullet, robosuite and SAPIEN print to fd 1 from C: keep it off the protocol
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return reader, writer


def _listen(address: str) -> None:
    host, _, port = address.rpartition(":")
    with socket.create_server((host or "127.0.0.1", int(port))) as server:
        bound = server.getsockname()
        print(f"evaluation worker listening on {bound[0]}:{bound[1]}", file=sys.stderr, flush=True)
        while True:
            conn, peer = server.accept()
            print(f"controller {peer[0]}:{peer[1]} connected", file=sys.stderr, flush=True)
            with conn, conn.makefile("rb") as reader, conn.makefile("wb") as writer:
                try:
                    serve_controller(reader, writer)
                except (ConnectionError, OSError) as exc:
                    print(f"controller lost ({exc})", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m evaluation.worker`."""
    parser = argparse.ArgumentParser(prog="python -m evaluation.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", metavar="HOST:PORT", help="serve controllers on TCP instead of stdin/stdout")
    args = parser.parse_args(argv)
    if args.listen:
        _listen(args.listen)
        return 0
    reader, writer = _stdio()
    started = time.perf_counter()
    serve_controller(reader, writer)
    print(f"evaluation worker done after {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
