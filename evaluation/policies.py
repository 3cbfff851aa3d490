"""Loading the policy under evaluation, plus two reference policies for checking adapters.

`load_policy(spec)`: "zero" (hold still, gripper open), "replay:DIR" (play back the recorded
demo episodes in DIR by instruction), "ws://HOST:PORT" (a policy server, `python -m vla serve`),
or a checkpoint folder / Hub id through `vla.Policy.from_pretrained` (imported only then).
Every policy is seen as `vla.api.PolicyLike`.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from datasets_build.actions import ACTION_DIM, GRIPPER, GRIPPER_OPEN
from datasets_build.crash_log import first_line, write_traceback
from datasets_build.errors import ConfigError, ToolkitError
from evaluation.ws_policy import WebsocketPolicy, is_server_url
from vla.api import PolicyLike


class ConstantPolicy:
    """Always the same action (default: no motion, gripper open): a floor for any benchmark."""

    def __init__(self, action: Sequence[float] | None = None, chunk_size: int = 1) -> None:
        if action is None:
            base = np.zeros(ACTION_DIM, dtype=np.float32)
            base[GRIPPER] = GRIPPER_OPEN
        else:
            base = np.asarray(action, dtype=np.float32).reshape(-1)
        self.action = base
        self.chunk_size = chunk_size

    def reset(self) -> None:
        """Stateless."""

    def act(self, images: Sequence[np.ndarray], instruction: str) -> np.ndarray:
        """(chunk, D) copies of the action."""
        return np.repeat(self.action[None], self.chunk_size, axis=0)

    def act_batch(self, images: Sequence[Sequence[np.ndarray]], instructions: Sequence[str]) -> np.ndarray:
        """(N, chunk, D) copies of the action."""
        return np.repeat(self.act([], "")[None], len(instructions), axis=0)


class ReplayPolicy:
    """Plays back recorded action sequences chosen by instruction, `chunk_size` steps per call.

    Replaying an expert episode into the simulator it was recorded in must reproduce its success:
    that checks an adapter's action conversion end to end. One cursor per instruction, so batched
    environments with distinct instructions replay independently; `reset` rewinds every cursor.
    Past the end of a recording it repeats the last action. An instruction with no recording is an
    error, or gets `default` (e.g. hold still) when one is given.
    """

    def __init__(
        self, recordings: Mapping[str, np.ndarray], chunk_size: int = 1, default: Sequence[float] | None = None
    ) -> None:
        self.recordings = {k: np.asarray(v, dtype=np.float32) for k, v in recordings.items()}
        self.chunk_size = chunk_size
        self.default = None if default is None else np.asarray(default, dtype=np.float32).reshape(1, -1)
        self._cursor: dict[str, int] = {}

    @classmethod
    def from_episodes(
        cls, path: str, source: str = "demo", chunk_size: int = 1, default: Sequence[float] | None = None
    ) -> ReplayPolicy:
        """Recordings from the episodes of `source` at `path` (instruction -> actions)."""
        from datasets_build.sources import open_source

        episodes = open_source(source, path).episodes()
        return cls({ep.instruction: ep.actions for ep in episodes}, chunk_size, default)

    def reset(self) -> None:
        """Rewind every recording."""
        self._cursor.clear()

    def act(self, images: Sequence[np.ndarray], instruction: str) -> np.ndarray:
        """The next `chunk_size` recorded actions for `instruction`."""
        if instruction not in self.recordings and self.default is not None:
            return np.repeat(self.default, self.chunk_size, axis=0)
        if instruction not in self.recordings:
            raise ConfigError(f"replay policy: no recording for instruction {instruction!r}")
        actions = self.recordings[instruction]
        start = self._cursor.get(instruction, 0)
        self._cursor[instruction] = start + self.chunk_size
        index = np.minimum(np.arange(start, start + self.chunk_size), len(actions) - 1)
        return actions[index]

    def act_batch(self, images: Sequence[Sequence[np.ndarray]], instructions: Sequence[str]) -> np.ndarray:
        """One `act` per environment, stacked."""
        return np.stack([self.act(imgs, text) for imgs, text in zip(images, instructions, strict=True)])


def load_policy(spec: str, api_key_env: str = "", log_dir: str | Path | None = None) -> PolicyLike:
    """The policy named by `spec` ("zero", "replay:DIR", "ws://HOST:PORT", or a checkpoint folder / Hub id).

    `api_key_env` names the environment variable holding a policy server's API key. Errors are one line; an
    unexpected one (a model bug, an OOM) keeps its traceback in `log_dir/logs/` (a temp folder without one) and
    names that file.
    """
    if spec == "zero":
        return ConstantPolicy()
    if spec.startswith("replay:"):
        return ReplayPolicy.from_episodes(spec.removeprefix("replay:"))
    if is_server_url(spec):
        return WebsocketPolicy.from_env(spec, api_key_env)
    try:
        policy_class = importlib.import_module("vla").Policy
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"policy {spec!r}: vla.Policy is not available in this install ({exc})") from exc
    try:
        policy: PolicyLike = policy_class.from_pretrained(spec)
    except ToolkitError as exc:  # expected (not a checkpoint, a Hub id not found): one line, no log
        raise ConfigError(f"policy {spec!r}: cannot load checkpoint ({first_line(exc)})") from exc
    except Exception as exc:  # anything from the model code: one line here, the traceback in the log it names
        log = write_traceback(log_dir, "policy-load", traceback.format_exc())
        raise ConfigError(f"policy {spec!r}: cannot load checkpoint ({first_line(exc)}); traceback: {log}") from exc
    return policy
