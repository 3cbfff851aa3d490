"""A policy served by `python -m vla serve` (or any server in openpi's protocol), seen as `vla.api.PolicyLike`.

`WebsocketPolicy("ws://HOST:PORT")` connects, reads the server's metadata (its `chunk_size` makes the policy's),
and turns `act` into one request; `act_batch` sends its N requests at once so the server batches them; `reset`
tells the server a new episode starts. Imports only numpy, msgpack and websockets: simulator workers use it in
their own environments, without torch.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from datasets_build.errors import ConfigError, ToolkitError
from vla import wire

SCHEMES = ("ws://", "wss://")
# websockets >= 17 warns unless a connection used outside `with` says so; older releases have no such flag
_DIRECT: dict[str, Any] = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
API_KEY_ENV = "VLA_API_KEY"  # default variable a client reads its key from


def is_server_url(spec: str) -> bool:
    """True for a ws:// or wss:// policy address."""
    return spec.startswith(SCHEMES)


class WebsocketPolicy:
    """A remote policy: same contract as `vla.Policy` (float32 (chunk, 7) per observation, deterministic)."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float | None = 600.0) -> None:
        if not is_server_url(url):
            raise ConfigError(f"policy server address must start with ws:// or wss://, got {url!r}")
        self.url = url
        self.timeout_s = timeout_s
        headers = {wire.API_KEY_HEADER: f"{wire.API_KEY_SCHEME} {api_key}"} if api_key else None
        try:
            self._ws: ClientConnection = connect(
                url,
                compression=None,
                max_size=None,
                additional_headers=headers,
                proxy=None,
                open_timeout=30,
                **_DIRECT,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            hint = " (missing or wrong API key)" if status == 401 else ""
            raise ConfigError(f"policy server {url} refused the connection: HTTP {status}{hint}") from exc
        except (OSError, WebSocketException, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the policy server at {url} ({type(exc).__name__}: {exc})") from exc
        self.metadata: dict[str, Any] = self._receive("metadata")
        chunk = self.metadata.get("chunk_size") if isinstance(self.metadata, dict) else None
        if not isinstance(chunk, int) or chunk < 1:
            self.close()
            raise ConfigError(f"policy server {url} sent no chunk_size in its metadata (not a policy server?)")
        self.chunk_size: int = chunk

    @classmethod
    def from_env(cls, url: str, api_key_env: str = "") -> WebsocketPolicy:
        """Connect with the API key held by `api_key_env` (default $VLA_API_KEY when set; none otherwise)."""
        if api_key_env and not os.environ.get(api_key_env):
            raise ConfigError(f"api_key_env: the environment variable {api_key_env!r} is unset or empty")
        return cls(url, os.environ.get(api_key_env or API_KEY_ENV) or None)

    def _receive(self, what: str) -> Any:
        try:
            frame = self._ws.recv(timeout=self.timeout_s)
        except TimeoutError as exc:
            raise ToolkitError(f"policy server {self.url}: no {what} within {self.timeout_s} s") from exc
        except WebSocketException as exc:
            raise ToolkitError(f"policy server {self.url}: connection lost while waiting for {what} ({exc})") from exc
        if isinstance(frame, str):  # the server's one-line error
            raise ToolkitError(f"policy server {self.url}: {frame}")
        try:
            return wire.unpackb(frame)
        except wire.WireError as exc:
            raise ToolkitError(f"policy server {self.url}: {what}: {exc}") from exc

    def _receive_or_error(self) -> Any:
        try:
            return self._receive("actions")
        except ToolkitError as exc:
            return exc

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._ws.send(wire.packb(message))
        except WebSocketException as exc:
            raise ToolkitError(f"policy server {self.url}: connection lost ({exc})") from exc

    @staticmethod
    def _request(images: Sequence[np.ndarray], instruction: str) -> dict[str, Any]:
        if isinstance(images, np.ndarray) or len(images) == 0:
            raise ConfigError("pass a list of uint8 (H, W, 3) images, one per camera")
        if len(images) == 1:
            return {wire.IMAGE_KEY: np.asarray(images[0]), wire.PROMPT_KEY: instruction}
        return {wire.IMAGES_KEY: [np.asarray(i) for i in images], wire.PROMPT_KEY: instruction}

    def _actions(self, reply: Any) -> np.ndarray:
        actions = reply.get(wire.ACTIONS_KEY) if isinstance(reply, dict) else None
        if not isinstance(actions, np.ndarray):
            raise ToolkitError(f"policy server {self.url}: reply without an {wire.ACTIONS_KEY!r} array")
        return actions.astype(np.float32)

    def reset(self) -> None:
        """Tell the server a new episode starts (it resets a stateful policy while this is its only client)."""
        self._send({wire.RESET_KEY: True})
        self._receive("reset")

    def act(self, images: Sequence[np.ndarray], instruction: str) -> np.ndarray:
        """One observation -> float32 (chunk, 7)."""
        self._send(self._request(images, instruction))
        return self._actions(self._receive("actions"))

    def act_batch(self, images: Sequence[Sequence[np.ndarray]], instructions: Sequence[str]) -> np.ndarray:
        """N observations, sent together (the server batches them) -> float32 (N, chunk, 7)."""
        if isinstance(instructions, str) or len(images) != len(instructions):
            raise ConfigError(f"expected N image lists and N instructions, got {len(images)} and {len(instructions)}")
        for obs, text in zip(images, instructions, strict=True):
            self._send(self._request(obs, text))
        replies = [self._receive_or_error() for _ in instructions]  # all of them, so the next call starts in step
        errors = [r for r in replies if isinstance(r, ToolkitError)]
        if errors:
            raise errors[0]
        return np.stack([self._actions(r) for r in replies])

    def close(self) -> None:
        """Close the connection."""
        with contextlib.suppress(Exception):
            self._ws.close()

    def __enter__(self) -> WebsocketPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
