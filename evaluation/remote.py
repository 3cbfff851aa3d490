"""Simulators in their own environments: `evaluation run` starts (or reaches) K `evaluation.worker` processes and
hands them trials; each plays its episodes against one shared policy server.

`sim_options.python=/path/to/env/bin/python` starts the workers with that interpreter (stdin/stdout pipes; the
toolkit's source folder goes on their PYTHONPATH when it is a checkout, otherwise the environment needs
`pip install --no-deps vlm4vla-toolkit`); `sim_options.connect=[HOST:PORT, ...]` uses workers already listening
(`python -m evaluation.worker --listen HOST:PORT`). The policy is a server the workers reach: the run's
`--policy ws://HOST:PORT`, or, for a local checkpoint, a `vla.serve.PolicyServer` this process starts on
loopback with a one-run API key. Episode records, videos, resume and summaries stay on this side.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import socket
import subprocess
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tqdm import tqdm

from datasets_build.crash_log import write_traceback
from datasets_build.errors import ConfigError, ToolkitError
from evaluation.protocol import EpisodeRecord
from evaluation.sims import Trial
from evaluation.video import episode_video_path, write_mp4
from evaluation.worker import LISTEN_KEY_ENV
from evaluation.ws_policy import WebsocketPolicy
from vla import wire
from vla.api import PolicyLike

if TYPE_CHECKING:
    from evaluation.results import EpisodeLog
    from evaluation.run import RunConfig

LAUNCH_KEYS = ("python", "connect")  # sim_options that say where the simulator runs, not how it is set up
WORKER_KEY_ENV = "VLM4VLA_WORKER_API_KEY"  # how a started worker gets the key of the server this run started
LOG_DIR = "workers"


def uses_workers(sim_options: Mapping[str, Any]) -> bool:
    """True when the simulator runs in its own environment (`python` or `connect` given)."""
    return any(sim_options.get(key) for key in LAUNCH_KEYS)


def adapter_options(sim_options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of the simulator adapter itself (the launch keys removed)."""
    return {k: v for k, v in sim_options.items() if k not in LAUNCH_KEYS}


def source_root() -> Path | None:
    """The folder holding the toolkit's packages when it is a source checkout (None when installed)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


class WorkerError(ToolkitError):
    """A simulator worker failed; the message names its log file."""


class WorkerConnection:
    """One worker: a child process on pipes or a TCP connection, spoken to in request/reply messages."""

    def __init__(self, name: str, reader: IO[bytes], writer: IO[bytes], log: Path | None = None) -> None:
        self.name, self.log = name, log
        self.crash_dir: Path | None = None  # where a connected worker's reported traceback is kept (no log file)
        self._reader, self._writer = reader, writer
        self._messages = iter(wire.stream_unpacker(reader))
        self.process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self.info: dict[str, Any] = {}

    @classmethod
    def start(cls, name: str, python: str, log: Path, env: Mapping[str, str]) -> WorkerConnection:
        """`python -m evaluation.worker` with stderr (tracebacks, simulator output) into `log`."""
        if not os.access(python, os.X_OK):
            raise ConfigError(f"sim_options.python: {python} is not an executable interpreter")
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as stderr:
            process = subprocess.Popen(
                [python, "-m", "evaluation.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=dict(env),
            )
        assert process.stdin is not None
        assert process.stdout is not None
        worker = cls(name, process.stdout, process.stdin, log)
        worker.process = process
        return worker

    @classmethod
    def connect(cls, name: str, address: str, timeout_s: float = 30.0) -> WorkerConnection:
        """A worker listening at HOST:PORT (`python -m evaluation.worker --listen HOST:PORT`)."""
        host, _, port = str(address).rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"sim_options.connect: expected HOST:PORT, got {address!r}")
        try:
            sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        except OSError as exc:
            raise ConfigError(f"sim_options.connect: no worker at {address} ({exc})") from exc
        sock.settimeout(None)
        worker = cls(name, sock.makefile("rb"), sock.makefile("wb"))
        worker._socket = sock
        return worker

    def _where(self) -> str:
        if self.log is not None:
            return f"; its log: {self.log}"
        return ""

    def _stopped(self, command: str) -> WorkerError:
        code = None
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self.process.wait(timeout=5)
        status = f" (exit code {code})" if code is not None else ""
        return WorkerError(f"simulator worker {self.name} stopped{status} during {command!r}{self._where()}")

    def call(self, command: str, **fields: Any) -> Any:
        """Send one command and wait for its reply; a worker error or exit is a `WorkerError`."""
        self.send(command, **fields)
        return self.receive(command)

    def send(self, command: str, **fields: Any) -> None:
        """Send one command (its reply is read by `receive`)."""
        try:
            self._writer.write(wire.packb({"cmd": command, **fields}))
            self._writer.flush()
        except (OSError, ValueError) as exc:
            raise self._stopped(command) from exc

    def receive(self, command: str) -> Any:
        """The reply to `command`; a worker error or exit is a `WorkerError`."""
        try:
            reply = next(self._messages)
        except (StopIteration, OSError, ValueError) as exc:
            raise self._stopped(command) from exc
        if not isinstance(reply, dict) or ("ok" not in reply and "error" not in reply):
            raise WorkerError(f"simulator worker {self.name}: malformed reply to {command!r}")
        if "error" in reply:
            where = self._where()
            if self.log is None and isinstance(reply.get("traceback"), str):
                where = f"; traceback: {write_traceback(self.crash_dir, f'worker-{self.name}', reply['traceback'])}"
            raise WorkerError(f"simulator worker {self.name}: {reply['error']}{where}")
        return reply["ok"]

    def close(self) -> None:
        """Ask the worker to close its simulator; end the process if it does not."""
        with contextlib.suppress(OSError, ValueError):
            self._writer.write(wire.packb({"cmd": "close"}))
            self._writer.flush()
        for stream in (self._writer, self._reader):
            with contextlib.suppress(OSError, ValueError):
                stream.close()
        if self._socket is not None:
            self._socket.close()
        if self.process is not None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class WorkerFleet:
    """K workers sharing one policy server: the runner's view of them (`call`, `rollouts`, `close`, as a slot)."""

    def __init__(self, cfg: RunConfig, policy: PolicyLike, out: Path) -> None:
        from vla.serve import PolicyServer

        self.cfg, self.out = cfg, out
        self.server: PolicyServer | None = None
        self.workers: list[WorkerConnection] = []
        python = cfg.sim_options.get("python")
        connect = cfg.sim_options.get("connect")
        if python and connect:
            raise ConfigError("sim_options: give either python (start workers) or connect (reach them), not both")
        addresses = [connect] if isinstance(connect, str) else list(connect or [])
        env = dict(os.environ)
        api_key_env = cfg.api_key_env
        if isinstance(policy, WebsocketPolicy):
            url = policy.url  # the workers reach the run's server themselves
        elif addresses:
            raise ConfigError(
                "sim_options.connect: workers started elsewhere need a policy server they can reach; "
                "start one (python -m vla serve CHECKPOINT --host 0.0.0.0) and pass --policy ws://HOST:PORT"
            )
        else:  # a local policy: serve it on loopback for this run only
            key = secrets.token_urlsafe(24)
            self.server = PolicyServer(policy, "127.0.0.1", 0, api_key=key)
            url = self.server.start()
            env[WORKER_KEY_ENV] = key
            api_key_env = WORKER_KEY_ENV
        if python:
            root = source_root()
            if root is not None:  # a checkout: the worker imports the toolkit from it
                env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
        opened = {
            "sim": cfg.sim,
            "options": adapter_options(cfg.sim_options),
            "policy_url": url,
            "api_key_env": api_key_env,  # "" = the worker's $VLA_API_KEY, if set
            "chunk_mode": cfg.chunk_mode,
            "video": cfg.video,
        }
        try:
            if python:
                for i in range(cfg.workers):
                    log = out / LOG_DIR / f"worker-{i}.log"
                    self.workers.append(WorkerConnection.start(str(i), str(python), log, env))
            else:
                self.workers = [WorkerConnection.connect(str(i), a) for i, a in enumerate(addresses)]
                for worker in self.workers:
                    worker.crash_dir = out
            worker_key = os.environ.get(LISTEN_KEY_ENV) if addresses else None  # listening workers ask for it
            for worker in self.workers:  # open them all before waiting: simulators load in parallel
                worker.send("open", args=opened, key=worker_key)
            for worker in self.workers:
                worker.info = worker.receive("open")
        except BaseException:
            self.close()
            raise
        self.environment: dict[str, Any] = self.workers[0].info.get("environment", {})

    def call(self, command: str, argument: Any) -> Any:
        """An adapter question (`trials`, ...) asked of the first worker, answered as `_Slot.call` answers it."""
        value = self.workers[0].call("adapter", question=command, argument=argument)
        return [Trial(**t) for t in value] if command == "trials" else value

    def rollouts(self, log: EpisodeLog) -> FleetRollouts:
        """The object that plays pending trials on the workers and logs each finished one."""
        return FleetRollouts(self, log)

    def close(self) -> None:
        """Close every worker, then the policy server this run started."""
        for worker in self.workers:
            worker.close()
        if self.server is not None:
            self.server.stop()
            self.server = None


class FleetRollouts:
    """Plays trials on every worker at once (one thread each); records are logged here as they arrive."""

    def __init__(self, fleet: WorkerFleet, log: EpisodeLog) -> None:
        self.fleet, self.log = fleet, log
        self.policy_s = 0.0
        self.steps = 0
        self.finished: list[EpisodeRecord] = []

    def run(self, pending: deque[Trial], bar: tqdm) -> None:
        """Until no trial is left; the first worker failure stops handing out trials and is raised at the end."""
        lock = threading.Lock()
        results: queue.Queue[tuple[Trial, Any] | None] = queue.Queue()
        failed = threading.Event()

        def play(worker: WorkerConnection) -> None:
            try:
                while not failed.is_set():
                    with lock:
                        trial = pending.popleft() if pending else None
                    if trial is None:
                        break
                    results.put((trial, worker.call("episode", trial=asdict(trial))))
            except BaseException as exc:
                failed.set()
                results.put((Trial("", -1), exc))
            finally:
                results.put(None)

        threads = [threading.Thread(target=play, args=(w,), daemon=True) for w in self.fleet.workers]
        for thread in threads:
            thread.start()
        running, error = len(threads), None
        while running:
            item = results.get()
            if item is None:
                running -= 1
                continue
            trial, reply = item
            if isinstance(reply, BaseException):
                error = error or reply
                continue
            self._record(trial, reply)
            bar.update(1)
        if error is not None:
            raise error
        self.fleet.environment = self.fleet.workers[0].call("environment")  # now with what the episodes imported

    def _record(self, trial: Trial, reply: dict[str, Any]) -> None:
        record = EpisodeRecord.from_dict(reply["record"])
        frames = reply.get("frames")
        if frames is not None and len(frames):  # before the record: a logged episode always has its video
            write_mp4(episode_video_path(self.fleet.out, trial.task, trial.index), list(frames))
        self.log.append(record)
        self.finished.append(record)
        self.policy_s += float(reply.get("policy_s", 0.0))
        self.steps += int(reply.get("steps", 0))
