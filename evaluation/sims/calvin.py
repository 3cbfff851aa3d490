"""CALVIN ABC-D (calvin_env, PyBullet) as an evaluation adapter: one trial = one chain of 5 subtasks in scene D.

Protocol as upstream's `evaluate_policy`: the 1000 chains of `evaluation.calvin_sequences`, each
chain's symbolic initial state turned into robot and scene observations the way upstream does
(`initial_env_state`), up to 360 steps per subtask, and a subtask counts as done when the task
oracle (`calvin_env.envs.tasks.Tasks` from `conf/tasks/new_playtable_tasks.yaml`) finds it
between the `get_info()` at the subtask's start and the current one. A failed subtask ends the
chain. The instruction of each subtask is the first of its validation annotations
(`calvin_models/conf/annotations/new_playtable_validation.yaml` in the calvin repository).

The environment is built as upstream does: from a CALVIN split folder
(`task_ABC_D/validation`, whose `.hydra/merged_config.yaml` describes it) through
`calvin_env.envs.play_table_env.get_env`, or, with no dataset, composed from calvin_env's own
`conf` with hydra (scene D, static and gripper cameras); both with `use_scene_info=True`.
Actions: the 6 arm dims are CALVIN's normalised `rel_actions` (the CALVIN source keeps them),
the gripper goes back to +1 open / -1 close. The policy sees `rgb_static` as rendered.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from math import pi
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.actions import ARM, GRIPPER, gripper_to_calvin
from datasets_build.errors import ConfigError
from evaluation.calvin_sequences import SUBTASKS_PER_CHAIN, chains_digest, get_sequences
from evaluation.sims.base import Observation, SimAdapter, StepResult, Trial
from evaluation.sims.provenance import package_versions, sha256_file, sha256_files, sha256_json

STEPS_PER_SUBTASK = 360
NUM_CHAINS = 1000
CAMERA = "rgb_static"
ANNOTATIONS = Path("calvin_models/conf/annotations/new_playtable_validation.yaml")  # in the calvin repository
TASKS = Path("conf/tasks/new_playtable_tasks.yaml")  # in the calvin_env checkout

# The start configuration upstream resets every chain to (calvin_agent.evaluation.utils):
# TCP position (3), TCP euler (3), gripper width (1), 7 arm joints, gripper action (1).
ROBOT_START = np.array(
    [0.02586889, -0.2313129, 0.5712808, 3.09045411, -0.02908596, 1.50013585, 0.07999963,
     -1.21779124, 1.03987629, 2.11978254, -2.34205014, -0.87015899, 1.64119093, 0.55344928, 1.0]
)  # fmt: skip
BLOCK_SLIDER_LEFT = np.array([-2.40851662e-01, 9.24044687e-02, 4.60990009e-01])
BLOCK_SLIDER_RIGHT = np.array([7.03416330e-02, 9.24044687e-02, 4.60990009e-01])
BLOCK_TABLE = (np.array([5.00000896e-02, -1.20000177e-01, 4.59990009e-01]),
               np.array([2.29995412e-01, -1.19995140e-01, 4.59990010e-01]))  # fmt: skip
BLOCK_YAW_RANGE = (pi / 2 - pi / 8, pi / 2 + pi / 8)


def fnv1_32(data: bytes, value: int = 0) -> int:
    """32-bit FNV-1 (multiply, then xor) from start `value`; pyhash's `fnv1_32()` starts at 0, not FNV's basis."""
    for byte in data:
        value = (value * 0x01000193) % (1 << 32) ^ byte
    return value


def condition_seed(condition: Mapping[str, Any]) -> int:
    """Upstream's scene seed `pyhash.fnv1_32()(str(condition.values()))`: pyhash hashes a Python str as its
    UTF-16-LE code units (no byte-order mark) from start value 0."""
    return fnv1_32(str(dict(condition).values()).encode("utf-16-le"))


def initial_env_state(condition: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Symbolic initial state -> (robot_obs (15,), scene_obs (24,)) for `env.reset`, as upstream derives them.

    The two table spots are shuffled and the block yaws drawn with numpy's legacy RNG seeded by
    `condition_seed`, so each condition always gives upstream's scene.
    """
    rng = np.random.RandomState(condition_seed(condition))
    table = list(BLOCK_TABLE)
    rng.shuffle(table)
    scene = np.zeros(24)
    if condition["slider"] == "left":
        scene[0] = 0.28
    if condition["drawer"] == "open":
        scene[1] = 0.22
    if condition["lightbulb"] == 1:
        scene[3] = 0.088
    scene[4] = condition["lightbulb"]
    scene[5] = condition["led"]
    spots = {"slider_right": BLOCK_SLIDER_RIGHT, "slider_left": BLOCK_SLIDER_LEFT}
    red, blue, pink = condition["red_block"], condition["blue_block"], condition["pink_block"]
    scene[6:9] = spots.get(red, table[0])
    scene[11] = rng.uniform(*BLOCK_YAW_RANGE)
    scene[12:15] = spots.get(blue, table[1] if red == "table" else table[0])
    scene[17] = rng.uniform(*BLOCK_YAW_RANGE)
    scene[18:21] = spots.get(pink, table[1])
    scene[23] = rng.uniform(*BLOCK_YAW_RANGE)
    return ROBOT_START.copy(), scene


def initial_scenes_digest(conditions: Iterable[Mapping[str, Any]]) -> str:
    """sha256 of every condition's (robot_obs, scene_obs) as little-endian float64, in order: pins the scenes."""
    digest = hashlib.sha256()
    for condition in conditions:
        robot, scene = initial_env_state(condition)
        digest.update(np.concatenate([robot, scene]).astype("<f8").tobytes())
    return digest.hexdigest()


def calvin_action(action: np.ndarray) -> np.ndarray:
    """Project action (7,) -> calvin_env relative cartesian action: arm dims in [-1, 1], gripper +1 open / -1 close."""
    arr = np.asarray(action, dtype=np.float32).reshape(-1)
    out = arr.astype(np.float64).copy()
    out[ARM] = np.clip(arr[ARM], -1.0, 1.0)
    out[GRIPPER] = float(gripper_to_calvin(arr[GRIPPER : GRIPPER + 1])[0])
    return out


def annotations_file(path: str | Path | None) -> Path:
    """The validation annotation YAML: `path`, else `$CALVIN_ROOT/` + ANNOTATIONS (one-line error when neither)."""
    candidates = [Path(path)] if path else []
    if not path and os.environ.get("CALVIN_ROOT"):
        candidates.append(Path(os.environ["CALVIN_ROOT"]) / ANNOTATIONS)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = f" ({candidates[0]} is not a file)" if candidates else ""
    raise ConfigError(
        f"calvin: sim_options.annotations must name {ANNOTATIONS} of the calvin repository "
        f"(github.com/mees/calvin), or set CALVIN_ROOT to its checkout{where}"
    )


def load_annotations(path: str | Path | None) -> dict[str, str]:
    """subtask -> its first validation instruction, from upstream's annotation YAML (one-line error if absent)."""
    import yaml

    data = yaml.safe_load(annotations_file(path).read_text()) or {}
    return {str(k): str(v[0]) for k, v in data.items()}


def calvin_env_checkout() -> Path:
    """The root of the installed calvin_env checkout (its `conf/` and `data/` live there, beside the package).

    A `calvin_env/` folder in the working directory (e.g. the clone itself) shadows the installed
    package as an empty namespace package: that is refused in one line instead of failing later.
    """
    import calvin_env

    if getattr(calvin_env, "__file__", None) is None:
        found = ", ".join(str(p) for p in getattr(calvin_env, "__path__", []))
        raise ConfigError(
            f"calvin: 'import calvin_env' found the folder {found}, not the installed package (a calvin_env/ "
            "folder in the working directory shadows it); run from another directory"
        )
    return Path(calvin_env.__file__).resolve().parents[1]


def make_calvin_env(dataset_path: str | None = None, scene: str = "calvin_scene_D") -> Any:
    """A calvin_env PlayTableSimEnv (`use_scene_info=True`) from a split folder, else composed from calvin_env/conf."""
    checkout = calvin_env_checkout()
    import hydra

    if dataset_path:
        from calvin_env.envs.play_table_env import get_env

        if not (Path(dataset_path) / ".hydra" / "merged_config.yaml").is_file():
            raise ConfigError(f"calvin: {dataset_path}: not a CALVIN split folder (.hydra/merged_config.yaml missing)")
        return get_env(Path(dataset_path), show_gui=False)
    conf = checkout / "conf"
    if not conf.is_dir():
        raise ConfigError(f"calvin: {conf} missing: install calvin_env from its git checkout (pip install -e .)")
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with hydra.initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = hydra.compose(
            "config_data_collection",
            overrides=[f"scene={scene}", "cameras=static_and_gripper", f"data_path={checkout / 'data'}"],
        )
    return hydra.utils.instantiate(cfg.env, show_gui=False, use_vr=False, use_scene_info=True)


def make_task_oracle() -> Any:
    """calvin_env's task oracle from its `conf/tasks/new_playtable_tasks.yaml`."""
    checkout = calvin_env_checkout()
    import hydra
    from omegaconf import OmegaConf

    return hydra.utils.instantiate(OmegaConf.load(checkout / TASKS))


def _scene_files(dataset_path: str | None, scene: str) -> list[Path]:
    """The files that define the evaluated scene: the split's merged config, else calvin_env's scene config."""
    if dataset_path:
        return [Path(dataset_path) / ".hydra" / "merged_config.yaml"]
    return [calvin_env_checkout() / "conf" / "scene" / f"{scene}.yaml"]


class CalvinSim(SimAdapter):
    """CALVIN chains; `env` / `task_oracle` may be passed in (built as upstream does otherwise)."""

    name = "calvin"
    metric = "chain"
    max_steps = STEPS_PER_SUBTASK * SUBTASKS_PER_CHAIN

    def __init__(
        self,
        dataset_path: str | None = None,
        annotations: str | None = None,
        scene: str = "calvin_scene_D",
        env: Any = None,
        task_oracle: Any = None,
        instructions: Mapping[str, str] | None = None,
        steps_per_subtask: int = STEPS_PER_SUBTASK,
    ) -> None:
        if steps_per_subtask < 1:
            raise ConfigError(f"calvin: steps_per_subtask must be >= 1, got {steps_per_subtask}")
        self.steps_per_subtask = steps_per_subtask
        self.max_steps = steps_per_subtask * SUBTASKS_PER_CHAIN
        self._annotations = None if instructions is not None else annotations_file(annotations)
        self.instructions = dict(instructions) if instructions is not None else load_annotations(self._annotations)
        self._real_env = env is None
        self.dataset_path, self.scene = dataset_path, scene
        self.env = env if env is not None else make_calvin_env(dataset_path, scene)
        self.oracle = task_oracle if task_oracle is not None else make_task_oracle()
        self._subtasks: list[str] = []
        self._completed = 0
        self._subtask_steps = 0
        self._start_info: dict[str, Any] = {}

    def trials(self, per_task: int | None = None) -> list[Trial]:
        """The first `per_task` (default 1000) of upstream's evaluation chains."""
        chains = get_sequences(NUM_CHAINS)[: per_task or NUM_CHAINS]
        return [
            Trial("chain", i, 0, {"initial_state": state, "subtasks": list(subtasks)})
            for i, (state, subtasks) in enumerate(chains)
        ]

    @property
    def subtask(self) -> str:
        """The subtask being attempted."""
        return self._subtasks[self._completed]

    def reset(self, trial: Trial) -> Observation:
        """Reset the scene to the chain's initial state and start its first subtask."""
        self._subtasks = list(trial.data["subtasks"])
        missing = [s for s in self._subtasks if s not in self.instructions]
        if missing:
            raise ConfigError(f"calvin: no instruction for subtasks {missing}")
        robot_obs, scene_obs = initial_env_state(trial.data["initial_state"])
        obs = self.env.reset(robot_obs=robot_obs, scene_obs=scene_obs)
        self._completed = 0
        self._start_subtask()
        return self._observation(obs)

    def _start_subtask(self) -> None:
        self._subtask_steps = 0
        self._start_info = self.env.get_info()

    def step(self, action: np.ndarray) -> StepResult:
        """One step; on the oracle's verdict move to the next subtask (new instruction) or end the chain."""
        obs, _, _, info = self.env.step(calvin_action(action))
        self._subtask_steps += 1
        new_subtask = False
        if self.oracle.get_task_info_for_set(self._start_info, info, {self.subtask}):
            self._completed += 1
            if self._completed == len(self._subtasks):
                return StepResult(self._observation(obs), True, True, {"completed": self._completed})
            self._start_subtask()
            new_subtask = True
        elif self._subtask_steps >= self.steps_per_subtask:
            return StepResult(self._observation(obs), True, False, {"completed": self._completed})
        return StepResult(self._observation(obs), False, False, {"new_subtask": new_subtask})

    def result_info(self) -> dict[str, Any]:
        """Completed subtasks of the chain and the chain itself."""
        return {"completed": self._completed, "subtasks": list(self._subtasks)}

    def _observation(self, obs: Mapping[str, Any]) -> Observation:
        index = min(self._completed, len(self._subtasks) - 1)
        return Observation([np.asarray(obs["rgb_obs"][CAMERA])], self.instructions[self._subtasks[index]])

    def provenance(self) -> dict[str, Any]:
        """calvin_env / pybullet versions, the annotations, chains, initial scenes and scene config by sha256."""
        chains = get_sequences(NUM_CHAINS)
        record: dict[str, Any] = {
            "packages": package_versions(["calvin_env", "pybullet", "hydra-core", "omegaconf"]),
            "chains_sha256": chains_digest(chains),
            "initial_scenes_sha256": initial_scenes_digest(state for state, _ in chains),
            "instructions_sha256": sha256_json(self.instructions),
            "annotations_sha256": None if self._annotations is None else sha256_file(self._annotations),
            "scene": self.scene if not self.dataset_path else None,
            "dataset_path": self.dataset_path,
        }
        if self._real_env:
            checkout = calvin_env_checkout()
            record["calvin_env_commit"] = _git_head(checkout)
            record["scene_config_sha256"] = sha256_files(_scene_files(self.dataset_path, self.scene))
            record["tasks_sha256"] = sha256_file(checkout / TASKS)
        return record

    def close(self) -> None:
        """Disconnect calvin_env's PyBullet client once (its `__del__` would disconnect again: a traceback)."""
        close = getattr(self.env, "close", None)
        if close is not None:
            close()
            if hasattr(self.env, "cid"):
                self.env.cid = -1  # PlayTableSimEnv.close() disconnects only a client id >= 0


def _git_head(checkout: Path) -> str | None:
    """The commit a git checkout is at, read from .git without running git (None when not a checkout)."""
    head = checkout / ".git" / "HEAD"
    if not head.is_file():
        return None
    ref = head.read_text().strip()
    if not ref.startswith("ref: "):
        return ref
    name = ref.removeprefix("ref: ")
    loose = checkout / ".git" / name
    if loose.is_file():
        return loose.read_text().strip()
    packed = checkout / ".git" / "packed-refs"
    for line in packed.read_text().splitlines() if packed.is_file() else []:
        if line.endswith(" " + name):
            return line.split(" ", 1)[0]
    return None
