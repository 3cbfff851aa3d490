"""The CALVIN ABC-D evaluation chains: 1000 sequences of 5 subtasks, identical to upstream `get_sequences(1000)`.

Upstream (mees/calvin, `calvin_agent/evaluation/multistep_sequences.py`) enumerates the feasible
initial scene conditions, draws chains per condition with numpy's legacy global RNG (seeded by
the condition's index), then shuffles all chains under seed 0. This module re-derives the same
draws from the same symbolic task model with `numpy.random.RandomState`, so the result is
bit-identical without importing upstream (which needs torch and pyhash). Results are cached on
disk as JSON, keyed by the number of chains.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

SUBTASKS_PER_CHAIN = 5
State = dict[str, Any]
Chain = tuple[State, tuple[str, ...]]

# Subtask -> category; no two subtasks of one category may appear in the same chain.
CATEGORIES: dict[str, int] = {
    **{f"rotate_{c}_block_{d}": 1 for c in ("red", "blue", "pink") for d in ("right", "left")},
    **{f"push_{c}_block_{d}": 1 for c in ("red", "blue", "pink") for d in ("right", "left")},
    "move_slider_left": 2,
    "move_slider_right": 2,
    "open_drawer": 3,
    "close_drawer": 3,
    **{f"lift_{c}_block_table": 4 for c in ("red", "blue", "pink")},
    **{f"lift_{c}_block_slider": 5 for c in ("red", "blue", "pink")},
    **{f"lift_{c}_block_drawer": 6 for c in ("red", "blue", "pink")},
    "place_in_slider": 7,
    "place_in_drawer": 7,
    "turn_on_lightbulb": 8,
    "turn_off_lightbulb": 8,
    "turn_on_led": 8,
    "turn_off_led": 8,
    "push_into_drawer": 9,
    "stack_block": 10,
    "unstack_block": 11,
}

BLOCKS: tuple[str, ...] = ("red", "blue", "pink")
SLIDER_SIDES: tuple[str, ...] = ("slider_right", "slider_left")

# Scene conditions and their possible initial values, in upstream's key order (the order matters).
INITIAL_CONDITIONS: dict[str, list[Any]] = {
    "led": [0, 1],
    "lightbulb": [0, 1],
    "slider": ["right", "left"],
    "drawer": ["closed", "open"],
    "red_block": ["table", "slider_right", "slider_left"],
    "blue_block": ["table", "slider_right", "slider_left"],
    "pink_block": ["table", "slider_right", "slider_left"],
    "grasped": [0],
}


def _block(color: str) -> str:
    return f"{color}_block"


def _transitions() -> dict[str, list[tuple[dict[str, Any], dict[str, Any]]]]:
    """Subtask -> list of (precondition, effect) over the symbolic scene state, in upstream's task order."""
    rules: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for verb in ("rotate", "push"):
        for color in BLOCKS:
            for side in ("right", "left"):
                block = _block(color)
                rules[f"{verb}_{color}_block_{side}"] = [({block: "table", "grasped": 0}, {block: "table"})]
    rules["move_slider_left"] = [({"slider": "right", "grasped": 0}, {"slider": "left"})]
    rules["move_slider_right"] = [({"slider": "left", "grasped": 0}, {"slider": "right"})]
    rules["open_drawer"] = [({"drawer": "closed", "grasped": 0}, {"drawer": "open"})]
    rules["close_drawer"] = [({"drawer": "open", "grasped": 0}, {"drawer": "closed"})]
    for color in BLOCKS:
        block, lifted = _block(color), {_block(color): "grasped", "grasped": 1}
        rules[f"lift_{color}_block_table"] = [({block: "table", "grasped": 0}, lifted)]
        rules[f"lift_{color}_block_slider"] = [
            ({block: "slider_left", "slider": "right", "grasped": 0}, lifted),
            ({block: "slider_right", "slider": "left", "grasped": 0}, lifted),
        ]
        rules[f"lift_{color}_block_drawer"] = [({block: "drawer", "drawer": "open", "grasped": 0}, lifted)]
    rules["place_in_slider"] = [
        ({_block(c): "grasped", "slider": side, "grasped": 1}, {_block(c): f"slider_{side}", "grasped": 0})
        for c in BLOCKS
        for side in ("right", "left")
    ]
    rules["place_in_drawer"] = [
        ({_block(c): "grasped", "drawer": "open", "grasped": 1}, {_block(c): "drawer", "grasped": 0}) for c in BLOCKS
    ]
    pairs = [(top, bottom) for top in BLOCKS for bottom in BLOCKS if top != bottom]
    rules["stack_block"] = [
        (
            {_block(t): "grasped", _block(b): "table", "grasped": 1},
            {_block(t): "stacked_top", _block(b): "stacked_bottom", "grasped": 0},
        )
        for t, b in pairs
    ]
    rules["unstack_block"] = [
        (
            {_block(t): "stacked_top", _block(b): "stacked_bottom", "grasped": 0},
            {_block(t): "table", _block(b): "table"},
        )
        for t, b in pairs
    ]
    rules["turn_on_lightbulb"] = [({"lightbulb": 0, "grasped": 0}, {"lightbulb": 1})]
    rules["turn_off_lightbulb"] = [({"lightbulb": 1, "grasped": 0}, {"lightbulb": 0})]
    rules["turn_on_led"] = [({"led": 0, "grasped": 0}, {"led": 1})]
    rules["turn_off_led"] = [({"led": 1, "grasped": 0}, {"led": 0})]
    into_drawer = []
    for color in BLOCKS:
        others = [c for c in BLOCKS if c != color]
        condition: dict[str, Any] = {_block(color): "table"}
        condition.update({_block(o): list(SLIDER_SIDES) for o in others})
        condition.update({"drawer": "open", "grasped": 0})
        into_drawer.append((condition, {_block(color): "drawer", "grasped": 0}))
    rules["push_into_drawer"] = into_drawer
    return rules


TRANSITIONS = _transitions()
SUBTASKS: tuple[str, ...] = tuple(TRANSITIONS)  # upstream's task order: the draws index into it


def _holds(state: Mapping[str, Any], condition: Mapping[str, Any]) -> bool:
    return all(state[k] in v if isinstance(v, list) else state[k] == v for k, v in condition.items())


def successors(state: Mapping[str, Any], subtask: str) -> list[State]:
    """Every symbolic state `subtask` can lead to from `state` (empty when it is not feasible)."""
    return [{**state, **effect} for condition, effect in TRANSITIONS[subtask] if _holds(state, condition)]


def is_valid_chain(state: Mapping[str, Any], chain: Sequence[str]) -> bool:
    """True when every subtask is feasible with exactly one outcome in turn and no category repeats."""
    current: Mapping[str, Any] = state
    for subtask in chain:
        nxt = successors(current, subtask)
        if len(nxt) != 1:
            return False
        current = nxt[0]
    categories = [CATEGORIES[s] for s in chain]
    return len(set(categories)) == len(categories)


def initial_states() -> list[State]:
    """The feasible initial scene conditions: 1 or 2 blocks on the table, at most one per slider side."""
    states = []
    for values in itertools.product(*INITIAL_CONDITIONS.values()):
        places = list(values)
        if places.count("table") in (1, 2) and places.count("slider_right") < 2 and places.count("slider_left") < 2:
            states.append(dict(zip(INITIAL_CONDITIONS, values, strict=True)))
    return states


def _chains_for_state(state: State, count: int, seed: int) -> list[tuple[str, ...]]:
    """Rejection-sample `count` valid chains with the legacy RNG seeded by the state's index.

    `RandomState.choice(names, 5, replace=False)` is `names[permutation(len(names))[:5]]`; drawing
    the permutation directly gives the same chains without building a string array per draw.
    """
    rng = np.random.RandomState(seed)
    chains: list[tuple[str, ...]] = []
    verdicts: dict[tuple[int, ...], bool] = {}
    while len(chains) < count:
        picks = tuple(rng.permutation(len(SUBTASKS))[:SUBTASKS_PER_CHAIN].tolist())
        valid = verdicts.get(picks)
        if valid is None:
            valid = verdicts[picks] = is_valid_chain(state, [SUBTASKS[i] for i in picks])
        if valid:
            chains.append(tuple(SUBTASKS[i] for i in picks))
    return chains


def _chains_job(job: tuple[State, int, int]) -> list[tuple[str, ...]]:
    return _chains_for_state(*job)


@lru_cache(maxsize=8)
def _generate(num: int, workers: int) -> tuple[Chain, ...]:
    states = initial_states()
    counts = [len(part) for part in np.array_split(np.arange(num), len(states))]
    jobs = [(state, count, index) for index, (state, count) in enumerate(zip(states, counts, strict=True))]
    if workers > 1:  # ~7M rejection draws for 1000 chains: worth a process pool, as upstream does
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            drawn = list(pool.map(_chains_job, jobs, chunksize=4))
    else:
        drawn = [_chains_job(job) for job in jobs]
    chains: list[Chain] = [(state, chain) for (state, _, _), mine in zip(jobs, drawn, strict=True) for chain in mine]
    np.random.RandomState(0).shuffle(chains)  # type: ignore[arg-type]
    return tuple(chains)


def default_cache_dir() -> Path:
    """Where generated chains are cached: $VLM4VLA_CACHE or ~/.cache/vlm4vla, then calvin_sequences/."""
    root = os.environ.get("VLM4VLA_CACHE") or Path.home() / ".cache" / "vlm4vla"
    return Path(root) / "calvin_sequences"


def get_sequences(num: int = 1000, cache_dir: str | Path | None = None, workers: int | None = None) -> list[Chain]:
    """The first-`num` CALVIN evaluation chains as (initial_state, 5 subtasks), as upstream `get_sequences(num)`.

    Read from the JSON cache when present; otherwise generated and cached (the cache is optional:
    an unwritable folder only costs generating again: ~45 s of one core for 1000 chains).
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    path = Path(cache_dir or default_cache_dir()) / f"calvin_sequences_{num}.json"
    if path.is_file():
        try:
            return [(dict(state), tuple(chain)) for state, chain in json.loads(path.read_text())]
        except (ValueError, TypeError):
            pass  # a damaged cache is regenerated
    chains = [(dict(state), chain) for state, chain in _generate(num, workers or os.cpu_count() or 1)]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(to_json(chains))
        tmp.replace(path)
    except OSError:
        pass
    return chains


def to_json(chains: Sequence[Chain]) -> str:
    """Chains as the JSON list `[[initial_state, [subtask x 5]], ...]` (the `calvin-sequences` output)."""
    return json.dumps([[state, list(chain)] for state, chain in chains])


def chains_digest(chains: Sequence[Chain]) -> str:
    """sha256 of the canonical JSON of `chains` (sorted keys), to pin them in tests and result files."""
    canonical = json.dumps([[state, list(chain)] for state, chain in chains], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
