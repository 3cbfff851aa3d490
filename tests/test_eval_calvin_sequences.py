"""CALVIN evaluation chains: identical to upstream `get_sequences(1000)` (pinned by fixture and hash), valid, cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.calvin_sequences import (
    CATEGORIES,
    SUBTASKS,
    _chains_for_state,
    chains_digest,
    get_sequences,
    initial_states,
    is_valid_chain,
    successors,
)
from evaluation.cli import main
from evaluation.sims.calvin import CalvinSim, initial_scenes_digest

# The first three chains and the sha256 (canonical JSON, sorted keys) of all 1000, from running
# upstream mees/calvin@fa03f01 `multistep_sequences.get_sequences(1000)` once outside the project.
UPSTREAM_FIRST = [
    (
        {
            "led": 1,
            "lightbulb": 1,
            "slider": "left",
            "drawer": "open",
            "red_block": "slider_left",
            "blue_block": "table",
            "pink_block": "slider_right",
            "grasped": 0,
        },
        (
            "rotate_blue_block_right",
            "move_slider_right",
            "lift_red_block_slider",
            "place_in_slider",
            "turn_off_lightbulb",
        ),
    ),
    (
        {
            "led": 1,
            "lightbulb": 1,
            "slider": "right",
            "drawer": "open",
            "red_block": "slider_right",
            "blue_block": "table",
            "pink_block": "slider_left",
            "grasped": 0,
        },
        ("turn_off_led", "push_into_drawer", "lift_blue_block_drawer", "place_in_slider", "close_drawer"),
    ),
    (
        {
            "led": 0,
            "lightbulb": 1,
            "slider": "right",
            "drawer": "closed",
            "red_block": "table",
            "blue_block": "slider_right",
            "pink_block": "slider_left",
            "grasped": 0,
        },
        ("lift_pink_block_slider", "place_in_slider", "open_drawer", "rotate_red_block_right", "lift_red_block_table"),
    ),
]
UPSTREAM_LAST = (
    {
        "led": 1,
        "lightbulb": 0,
        "slider": "left",
        "drawer": "closed",
        "red_block": "slider_right",
        "blue_block": "slider_left",
        "pink_block": "table",
        "grasped": 0,
    },
    ("move_slider_right", "turn_on_lightbulb", "push_pink_block_left", "open_drawer", "push_into_drawer"),
)
UPSTREAM_SHA256 = "13bc4fad80a302e6405e5f4f800cc028789a245409cd12df39b783099ad4860f"
# sha256 of the 1000 chains' (robot_obs, scene_obs) as little-endian float64, from upstream's own
# get_env_state_for_initial_condition (mees/calvin@fa03f01, pyhash2 0.9.4 as pyhash) run outside the project.
UPSTREAM_SCENES_SHA256 = "0789732599c9f93d6506018704c1717b42d9ce8921a430403964813f3c1ebd71"


def test_symbolic_model() -> None:
    assert len(SUBTASKS) == 34
    assert set(SUBTASKS) == set(CATEGORIES)
    assert SUBTASKS[0] == "rotate_red_block_right"
    assert SUBTASKS[-1] == "push_into_drawer"
    assert len(initial_states()) == 192
    state = UPSTREAM_FIRST[0][0]
    assert successors(state, "open_drawer") == []  # already open
    assert successors(state, "lift_red_block_slider") == []  # red is behind the closed (left) slider door
    (after,) = successors(state, "lift_pink_block_slider")  # pink on the right, slider moved left: reachable
    assert after["pink_block"] == "grasped"
    assert after["grasped"] == 1
    assert not is_valid_chain(state, ["open_drawer", "close_drawer", "turn_on_led", "move_slider_left", "stack_block"])


def test_chains_per_state_are_deterministic_and_valid() -> None:
    state = initial_states()[7]
    first = _chains_for_state(state, 6, 7)
    assert first == _chains_for_state(state, 6, 7)
    assert len(set(first)) <= 6
    assert all(is_valid_chain(state, chain) for chain in first)


@pytest.mark.slow
def test_identical_to_upstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLM4VLA_CACHE", str(tmp_path))
    chains = get_sequences(1000, workers=2)
    tmp_path = tmp_path / "calvin_sequences"
    assert chains[:3] == UPSTREAM_FIRST
    assert chains[-1] == UPSTREAM_LAST
    assert chains_digest(chains) == UPSTREAM_SHA256
    assert initial_scenes_digest(state for state, _ in chains) == UPSTREAM_SCENES_SHA256
    assert all(is_valid_chain(state, chain) for state, chain in chains)
    cached = tmp_path / "calvin_sequences_1000.json"
    assert cached.is_file()
    assert get_sequences(1000, cache_dir=tmp_path) == chains  # read back from the cache
    out = tmp_path / "seqs.json"
    assert main(["calvin-sequences", "--num", "1000", "--out", str(out), "--cache-dir", str(tmp_path)]) == 0
    data = json.loads(out.read_text())
    assert len(data) == 1000
    assert data[0] == [UPSTREAM_FIRST[0][0], list(UPSTREAM_FIRST[0][1])]
    # the CALVIN adapter's trials are these chains, in this order (read from the cache just written)
    sim = CalvinSim(env=object(), task_oracle=object(), instructions={})
    trials = sim.trials(per_task=3)
    assert [(t.data["initial_state"], tuple(t.data["subtasks"])) for t in trials] == UPSTREAM_FIRST
    assert [t.key for t in trials] == ["chain/0000", "chain/0001", "chain/0002"]
