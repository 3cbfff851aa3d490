"""`python -m vla serve`: a policy behind a websocket, in openpi's protocol, batching the requests of many clients.

On connect the server sends its metadata (chunk size, action convention, backbone, image size, and the policy's
own `metadata`); then each request {"image": uint8 (H, W, 3), "prompt": str} gets {"actions": float32 (chunk, 7),
"server_timing": {...}}, so `openpi_client.websocket_client_policy.WebsocketClientPolicy` drives it unmodified.
Requests arriving from all connections within a short window (or while the model is busy) go through one
`act_batch` call. A malformed request gets a one-line text frame and the connection stays open. With an API key,
a handshake without `Authorization: Api-Key <key>` is refused (HTTP 401). `{"reset": true}` starts a new
episode: it reaches `policy.reset()` while no other client asks for actions; the one policy is shared by every
connection, so a server with several acting clients serves policies that keep no per-episode state (VLM4VLA keeps
none), as `evaluation run` does with several environments.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import http
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from datasets_build.actions import ACTION_DIM, ACTION_NAMES, GRIPPER_CLOSED, GRIPPER_OPEN
from datasets_build.errors import ConfigError, ToolkitError
from vla import wire
from vla.api import PolicyLike

logger = logging.getLogger("vla.serve")
ACTION_CONVENTION = "xyz translation delta, roll-pitch-yaw rotation delta, gripper absolute (1 open, 0 closed)"
MAX_MESSAGE_BYTES = 128 * 2**20


@dataclass
class ServeConfig:
    """`vla serve`: which checkpoint, where to listen, how requests are batched."""

    policy: str = ""  # checkpoint folder or Hub id
    host: str = "127.0.0.1"  # 0.0.0.0 to accept clients from other machines
    port: int = 8000
    api_key_env: str = ""  # name of the environment variable holding the API key; "" = no key
    batch_window_ms: float = 5.0  # how long the first request waits for others while clients are stepping
    max_batch: int = 32
    device: str = ""  # "" = cuda when available, else cpu

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: must be in [0, 65535], got {self.port}")
        if self.batch_window_ms < 0 or self.max_batch < 1:
            raise ConfigError("batch_window_ms must be >= 0 and max_batch >= 1")


def read_api_key(env_var: str) -> str | None:
    """The API key held by the environment variable `env_var` ("" = no key); an unset or empty variable is an error."""
    if not env_var:
        return None
    key = os.environ.get(env_var, "")
    if not key:
        raise ConfigError(f"api_key_env: the environment variable {env_var!r} is unset or empty")
    return key


def policy_metadata(policy: PolicyLike) -> dict[str, Any]:
    """What a client learns on connecting: the action contract, the checkpoint's settings, the policy's `metadata`."""
    meta: dict[str, Any] = {
        "chunk_size": int(policy.chunk_size),
        "action_dim": ACTION_DIM,
        "action_names": list(ACTION_NAMES),
        "action_convention": ACTION_CONVENTION,
        "gripper_open": GRIPPER_OPEN,
        "gripper_closed": GRIPPER_CLOSED,
        "request": {wire.IMAGE_KEY: "uint8 (H, W, 3)", wire.PROMPT_KEY: "str"},
        "policy_class": type(policy).__name__,
    }
    config = getattr(getattr(policy, "model", None), "config", None)
    for name in ("backbone", "image_size", "prompt_scheme"):
        if config is not None and getattr(config, name, None) is not None:
            meta[name] = getattr(config, name)
    meta.update(dict(getattr(policy, "metadata", None) or {}))
    try:
        wire.packb(meta)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"policy metadata cannot be sent ({exc}); keep it JSON-like") from exc
    return meta


class BadRequest(ValueError):
    """A request the server answers with an error text frame (the connection stays open)."""


def check_request(obs: Any) -> tuple[list[np.ndarray], str]:
    """A request -> (images, prompt), or a `BadRequest` naming the key at fault."""
    expected = f"expected a map {{{wire.IMAGE_KEY!r}: uint8 (H, W, 3), {wire.PROMPT_KEY!r}: str}}"
    if not isinstance(obs, Mapping):
        raise BadRequest(f"{expected}, got {type(obs).__name__}")
    keys = set(obs)
    unknown = sorted(str(k) for k in keys - {wire.IMAGE_KEY, wire.IMAGES_KEY, wire.PROMPT_KEY})
    if unknown:
        raise BadRequest(f"unknown keys {unknown}; {expected}")
    if (wire.IMAGE_KEY in keys) == (wire.IMAGES_KEY in keys):
        raise BadRequest(f"give exactly one of {wire.IMAGE_KEY!r} or {wire.IMAGES_KEY!r} (a list, one per camera)")
    if wire.IMAGE_KEY in keys:
        images = [_check_image(obs[wire.IMAGE_KEY], wire.IMAGE_KEY)]
    else:
        raw = obs[wire.IMAGES_KEY]
        if not isinstance(raw, (list, tuple)) or not raw:
            raise BadRequest(f"{wire.IMAGES_KEY}: expected a non-empty list of uint8 (H, W, 3) images")
        images = [_check_image(image, f"{wire.IMAGES_KEY}[{i}]") for i, image in enumerate(raw)]
    prompt = obs.get(wire.PROMPT_KEY)
    if not isinstance(prompt, str) or not prompt.strip():
        got = repr(prompt) if isinstance(prompt, str) else type(prompt).__name__
        raise BadRequest(f"{wire.PROMPT_KEY}: expected a non-empty str, got {got}")
    return images, prompt


def _check_image(image: Any, key: str) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise BadRequest(f"{key}: expected a uint8 (H, W, 3) array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3 or min(image.shape) < 1:
        raise BadRequest(f"{key}: expected a uint8 (H, W, 3) array, got {image.dtype} {tuple(image.shape)}")
    return image


@dataclass
class _Request:
    images: list[np.ndarray]
    prompt: str
    future: asyncio.Future[Any]
    arrived: float


class _Connection:
    """One client: requests counted until answered, replies sent in the order requests came."""

    def __init__(self, websocket: ServerConnection) -> None:
        self.websocket = websocket
        self.inflight = 0
        self.acting = False  # has asked for actions (a client that only holds the connection is not waited for)
        self.replies: asyncio.Queue[asyncio.Future[Any] | None] = asyncio.Queue()


class PolicyServer:
    """Serves one `PolicyLike` over websockets (openpi's protocol); `start()` runs it in a background thread.

    `batch_window_s`: after the first request of a batch, how long to wait for the clients that have no request
    in flight (0 = never wait; requests that arrive while the model runs are batched regardless).
    """

    def __init__(
        self,
        policy: PolicyLike,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        batch_window_s: float = 0.005,
        max_batch: int = 32,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.policy = policy
        self.host, self.port = host, port
        self.metadata = dict(metadata) if metadata is not None else policy_metadata(policy)
        self._metadata_frame = wire.packb(self.metadata)
        self._api_key = api_key
        self.batch_window_s, self.max_batch = batch_window_s, max_batch
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")
        self._connections: set[_Connection] = set()
        self._queue: asyncio.Queue[_Request] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self.stats = {"requests": 0, "batches": 0, "errors": 0, "connections": 0}

    # ------------------------------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """ws://HOST:PORT of the running server (the port the OS chose when 0 was asked)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"ws://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> str:
        """Serve in a daemon thread; returns the URL once listening (errors while binding are raised here)."""
        self._thread = threading.Thread(target=self._run_thread, name="vla-serve", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ToolkitError(f"policy server did not start listening within {timeout:.0f} s")
        if self._failure is not None:
            raise self._failure
        return self.url

    def stop(self) -> None:
        """Close every connection and stop serving."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop may have ended already
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> PolicyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self, on_ready: Any = None) -> None:
        """Serve in this thread until interrupted (Ctrl-C); `on_ready(server)` runs once listening."""
        asyncio.run(self._main(on_ready))

    def _run_thread(self) -> None:
        try:
            asyncio.run(self._main(None))
        except BaseException as exc:
            self._failure = exc if isinstance(exc, ToolkitError) else ToolkitError(f"policy server: {exc}")
            self._ready.set()

    async def _main(self, on_ready: Any) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._queue = asyncio.Queue()
        try:
            server = await serve(
                self._handle,
                self.host,
                self.port,
                compression=None,
                max_size=MAX_MESSAGE_BYTES,
                process_request=self._process_request,
            )
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.host}:{self.port} ({exc.strerror or exc})") from exc
        batcher = asyncio.create_task(self._batcher())
        async with server:
            self.port = int(next(iter(server.sockets)).getsockname()[1])
            self._ready.set()
            if on_ready is not None:
                on_ready(self)
            await self._stop.wait()
            batcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await batcher

    # ---------------------------------------------------------------------------------------- connections
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == wire.HEALTH_PATH:
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self._api_key is not None:
            given = request.headers.get(wire.API_KEY_HEADER, "")
            expected = f"{wire.API_KEY_SCHEME} {self._api_key}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                logger.warning("refused a connection from %s: missing or wrong API key", connection.remote_address)
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong API key\n")
        return None

    async def _handle(self, websocket: ServerConnection) -> None:
        conn = _Connection(websocket)
        self._connections.add(conn)
        self.stats["connections"] += 1
        logger.info("client %s connected (%d open)", websocket.remote_address, len(self._connections))
        writer = asyncio.create_task(self._write(conn))
        try:
            await websocket.send(self._metadata_frame)
            async for message in websocket:
                conn.inflight += 1
                conn.replies.put_nowait(self._accept(conn, message))
        except ConnectionClosed:
            pass
        finally:
            conn.replies.put_nowait(None)
            with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
                await writer
            self._connections.discard(conn)
            logger.info("client %s disconnected (%d open)", websocket.remote_address, len(self._connections))

    async def _write(self, conn: _Connection) -> None:
        while (future := await conn.replies.get()) is not None:
            reply = await future
            conn.inflight -= 1
            await conn.websocket.send(reply)

    def _accept(self, conn: _Connection, message: str | bytes) -> asyncio.Future[Any]:
        """Decode and check one message: a reset, an inference request (queued for a batch) or an error reply."""
        assert self._loop is not None
        assert self._queue is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        if isinstance(message, str):
            self.stats["errors"] += 1
            future.set_result("bad request: send msgpack-numpy binary frames, not text")
            return future
        try:
            obs = wire.unpackb(message)
            if isinstance(obs, Mapping) and set(obs) == {wire.RESET_KEY}:
                return asyncio.ensure_future(self._reset(conn))
            images, prompt = check_request(obs)
        except ValueError as exc:
            self.stats["errors"] += 1
            future.set_result(f"bad request: {exc}")
            return future
        conn.acting = True
        self._queue.put_nowait(_Request(images, prompt, future, time.perf_counter()))
        return future

    async def _reset(self, conn: _Connection) -> bytes:
        """`policy.reset()` (on the inference thread) when no other client asks for actions; always acknowledged."""
        assert self._loop is not None
        alone = not any(other.acting for other in self._connections if other is not conn)
        if alone:
            await self._loop.run_in_executor(self._executor, self.policy.reset)
        return wire.packb({wire.RESET_KEY: True, "policy_reset": alone})

    # --------------------------------------------------------------------------------------------- batching
    def _idle_clients(self) -> int:
        """Acting connections with nothing in flight: they are stepping their simulators and may send soon."""
        return sum(1 for c in self._connections if c.acting and c.inflight == 0)

    async def _batcher(self) -> None:
        assert self._queue is not None
        assert self._loop is not None
        while True:
            batch = [await self._queue.get()]
            deadline = time.perf_counter() + self.batch_window_s
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or not self._idle_clients():
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            replies = await self._loop.run_in_executor(self._executor, self._infer, batch)
            for request, reply in zip(batch, replies, strict=True):
                if not request.future.done():
                    request.future.set_result(reply)

    def _infer(self, batch: list[_Request]) -> list[bytes | str]:
        """One `act_batch` for the whole batch; if it fails, each request alone, so only a bad one gets the error."""
        started = time.perf_counter()
        try:
            actions = self._act([r.images for r in batch], [r.prompt for r in batch])
        except Exception:
            if len(batch) == 1:
                self.stats["errors"] += 1
                logger.exception("policy failed on a request")
                return [f"policy error: {traceback.format_exc(limit=-1).strip().splitlines()[-1]}"]
            return [reply for request in batch for reply in self._infer([request])]
        done = time.perf_counter()
        self.stats["requests"] += len(batch)
        self.stats["batches"] += 1
        infer_ms = 1000 * (done - started)
        return [
            wire.packb(
                {
                    wire.ACTIONS_KEY: chunk,
                    wire.TIMING_KEY: {
                        "infer_ms": infer_ms,
                        "queue_ms": 1000 * (started - request.arrived),
                        "batch_size": len(batch),
                    },
                }
            )
            for request, chunk in zip(batch, actions, strict=True)
        ]

    def _act(self, images: list[list[np.ndarray]], prompts: list[str]) -> np.ndarray:
        actions = np.asarray(self.policy.act_batch(images, prompts), dtype=np.float32)
        if actions.ndim != 3 or actions.shape[0] != len(prompts):
            raise ToolkitError(f"policy returned actions of shape {actions.shape} for {len(prompts)} requests")
        return actions


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> dict[int, Any]:
    """Make Ctrl-C and SIGTERM (what `kill` and cluster schedulers send) stop the server; the previous handlers.

    A process started as a background job (`cmd &`, nohup, some launchers) inherits SIGINT *ignored* (POSIX), and
    Python then installs no KeyboardInterrupt handler: without this, such a server could only be killed."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # asyncio.run then turns it into a clean shutdown
    signal.signal(signal.SIGTERM, _interrupt)
    return previous


def serve_policy(cfg: ServeConfig) -> None:
    """Load `cfg.policy` (a VLA checkpoint folder or Hub id) and serve it until interrupted."""
    if not cfg.policy:
        raise ConfigError("policy: a checkpoint folder or Hub id is required")
    api_key = read_api_key(cfg.api_key_env)
    from vla.policy import Policy

    policy = Policy.from_pretrained(cfg.policy, device=cfg.device or None)
    metadata = {"checkpoint": cfg.policy, **policy_metadata(policy)}
    server = PolicyServer(
        policy,
        cfg.host,
        cfg.port,
        api_key,
        batch_window_s=cfg.batch_window_ms / 1000,
        max_batch=cfg.max_batch,
        metadata=metadata,
    )

    def ready(running: PolicyServer) -> None:
        meta = running.metadata
        auth = f"API key from ${cfg.api_key_env}" if api_key else "no API key"
        print(
            f"serving {cfg.policy} on ws://{cfg.host}:{running.port} (chunk {meta['chunk_size']}, "
            f"backbone {meta.get('backbone', '?')}, {auth}); Ctrl-C stops",
            flush=True,
        )

    restore = _stop_on_signals()
    try:
        server.serve_forever(on_ready=ready)
    except KeyboardInterrupt:
        pass
    finally:
        for signum, handler in restore.items():
            signal.signal(signum, handler)
        stats = server.stats
        mean = stats["requests"] / stats["batches"] if stats["batches"] else 0.0
        print(
            f"served {stats['requests']} requests in {stats['batches']} batches (mean {mean:.1f}), "
            f"{stats['errors']} errors, {stats['connections']} connections",
            flush=True,
        )
