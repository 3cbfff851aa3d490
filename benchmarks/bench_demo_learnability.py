"""Can a tiny backbone learn what the demo's policy must see? VLA fit on demo episodes against a pixel baseline.

The demo's VLAs learnt nothing (issue 18) and this measures why, in one run on the same data: a VLA built on a tiny
random backbone, with the paper's head and with `head_input_norm: batch`, is trained (a plain AdamW loop over the
VLA's own model, samples and loss) to regress either the recorded actions or the TCP position (`--target tcp`:
where the gripper is, visible in every static frame), and is scored by R^2 per dim on held-out episodes. The
baseline is ridge regression on the raw pixels of the same frames (downsampled to `--pixels` px): a linear read-out
that knows every pixel's place. Ratio = VLA R^2 / baseline R^2 on the dims the baseline predicts (R^2 >= 0.3); a
policy that can localise gets close to 1.
Usage:
    python benchmarks/bench_demo_learnability.py [--backbone Qwen/Qwen2.5-VL-3B-Instruct] [--target tcp|action]
        [--steps 600] [--lr 3e-4] [--episodes 100] [--camera static] [--image-size 112] [--head-input-norm none,batch]
        [--json OUT]
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="bench-learn-hf-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from run_record import write_result

from datasets_build.episode import Episode
from datasets_build.sources import open_source
from datasets_build.tiny_models import install_tiny_backbones
from vla.configuration_vla import VLAConfig
from vla.data import VLASample, episode_samples
from vla.head import refresh_input_statistics
from vla.modeling_vla import VLAPolicyModel
from vla.normalization import ActionNormalizer

FAMILY = "gripper_over_block"
TCP = slice(0, 3)  # state columns x, y, z of the demo sim (datasets_build.sim.env.STATE_NAMES)
PREDICTABLE = 0.3  # baseline R^2 from which a dim counts in the ratio


def _episodes(args: argparse.Namespace) -> list[Episode]:
    """The demo episodes of `--data`, or `--episodes` new ones of gripper_over_block at `--image-size`."""
    folder = Path(args.data) if args.data else None
    if folder is None:
        from datasets_build.demo_episodes import DemoEpisodesConfig, record_demo_episodes

        folder = Path(tempfile.mkdtemp(prefix="bench-learn-demo-")) / "episodes"
        cfg = DemoEpisodesConfig(
            out=str(folder), episodes=args.episodes, seed=100, tasks=[FAMILY], image_size=args.image_size, workers=2
        )
        record_demo_episodes(cfg)
    return list(open_source("demo", folder).episodes())


def _targets(episodes: list[Episode], target: str) -> np.ndarray:
    """(N, 3) per frame: the TCP position or the action's translation, scaled to [-1, 1] per dim (q01/q99)."""
    values = np.concatenate(
        [(e.state[:, TCP] if target == "tcp" else e.actions[:, :3]) for e in episodes if e.state is not None]
    ).astype(np.float64)
    low, high = np.quantile(values, 0.01, axis=0), np.quantile(values, 0.99, axis=0)
    return np.clip(2.0 * (values - low) / np.maximum(high - low, 1e-9) - 1.0, -1.0, 1.0).astype(np.float32)


def _r2(pred: np.ndarray, true: np.ndarray) -> list[float]:
    return [float(1.0 - ((pred[:, d] - true[:, d]) ** 2).mean() / max(true[:, d].var(), 1e-12)) for d in range(3)]


def ridge_baseline(images: np.ndarray, y: np.ndarray, train: np.ndarray, pixels: int, lam: float) -> list[float]:
    """Held-out R^2 of ridge regression from the raw pixels (downsampled to `pixels` px) to `y`."""
    x = np.stack([np.asarray(Image.fromarray(im).resize((pixels, pixels)), dtype=np.float64).ravel() for im in images])
    x /= 255.0
    mean_x, mean_y = x[train].mean(0), y[train].mean(0)
    xc = x - mean_x
    weights = np.linalg.solve(xc[train].T @ xc[train] + lam * np.eye(x.shape[1]), xc[train].T @ (y[train] - mean_y))
    return _r2(xc[~train] @ weights + mean_y, y[~train])


def vla_fit(
    args: argparse.Namespace, samples: list[VLASample], y: np.ndarray, train: np.ndarray, head_input_norm: str
) -> tuple[list[float], list[float], float]:
    """Train the VLA on the train frames to regress `y` (in its first chunk step's translation dims); R^2 on the
    train and held-out frames, and the seconds trained."""
    torch.manual_seed(args.seed)
    config = VLAConfig(
        backbone=args.backbone,
        chunk_size=1,
        image_size=args.image_size,
        prompt_scheme=args.prompt_scheme,
        head_input_norm=head_input_norm,
    )
    model = VLAPolicyModel.build(config)
    backbone = model.backbone
    targets = torch.zeros(len(samples), 1, 7)
    targets[:, 0, :3] = torch.from_numpy(y)
    targets[:, 0, 6] = torch.from_numpy(np.array([s.actions[0, 6] for s in samples]))
    mask = torch.ones(len(samples), 1, dtype=torch.bool)

    def model_inputs(index: list[int]) -> dict[str, torch.Tensor]:
        return backbone.encode([samples[i].image for i in index], [samples[i].instruction for i in index])

    def batch(index: list[int]) -> dict[str, torch.Tensor]:
        return {**model_inputs(index), "actions": targets[index], "action_mask": mask[index]}

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    train_index = np.flatnonzero(train)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    model.train()
    for step in range(1, args.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, step / max(1, args.warmup))
        loss = model(batch(rng.choice(train_index, args.batch, replace=False).tolist()))["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % max(1, args.steps // 5) == 0:
            print(
                f"  step {step}/{args.steps} loss {loss.item():.4f} ({time.perf_counter() - started:.0f} s)", flush=True
            )
    seconds = time.perf_counter() - started
    with torch.no_grad():  # a standardised head's statistics from the train frames, as `vla train` refreshes them
        train_states = [
            model.query_states(model_inputs(train_index[start : start + 32].tolist()))
            for start in range(0, len(train_index), 32)
        ]
    refresh_input_statistics(model.head, train_states)
    model.eval()
    pred = np.zeros_like(y)
    with torch.no_grad():
        for start in range(0, len(samples), 32):
            index = list(range(start, min(start + 32, len(samples))))
            pred[index] = model.predict(model_inputs(index))[:, 0, :3].float().numpy()
    return _r2(pred[train], y[train]), _r2(pred[~train], y[~train]), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="Qwen/Qwen2.5-VL-3B-Instruct", help="a paper backbone id (built tiny)")
    parser.add_argument("--target", choices=("tcp", "action"), default="tcp")
    parser.add_argument("--data", default="", help="demo episodes folder (default: record --episodes new ones)")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--camera", default="static")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--prompt-scheme", default="short")
    parser.add_argument("--head-input-norm", default="none,batch", help="comma-separated: one VLA fit each")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--pixels", type=int, default=28, help="baseline image side after downsampling")
    parser.add_argument("--ridge", type=float, default=10.0, help="baseline ridge penalty")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="", help="write the results here")
    args = parser.parse_args(argv)
    install_tiny_backbones(ids=[args.backbone])
    episodes = _episodes(args)
    # held out by episode: the last fifth
    split = int(0.8 * len(episodes))
    train = np.concatenate([np.full(len(e), i < split) for i, e in enumerate(episodes)])
    normalizer = ActionNormalizer.from_stats(None, mode="none")
    samples = [s for e in episodes for s in episode_samples(e, 1, normalizer, camera=args.camera)]
    images = np.stack([s.image for s in samples])
    y = _targets(episodes, args.target)
    baseline = ridge_baseline(images, y, train, args.pixels, args.ridge)
    print(f"baseline (ridge on {args.pixels}x{args.pixels} pixels) held-out R^2 x/y/z: {np.round(baseline, 3)}")
    dims = [d for d in range(3) if baseline[d] >= PREDICTABLE]
    fits: dict[str, Any] = {}
    for norm in args.head_input_norm.split(","):
        train_r2, heldout_r2, seconds = vla_fit(args, samples, y, train, norm)
        ratio = float(np.mean([max(heldout_r2[d], 0.0) / baseline[d] for d in dims])) if dims else float("nan")
        print(
            f"VLA ({args.backbone}, head_input_norm {norm}, {args.steps} steps, {seconds:.0f} s) R^2 "
            f"train {np.round(train_r2, 3)} held-out {np.round(heldout_r2, 3)}; ratio to baseline (dims {dims}): "
            f"{ratio:.2f}"
        )
        fits[norm] = {
            "train_r2": train_r2,
            "heldout_r2": heldout_r2,
            "ratio": ratio,
            "train_seconds": round(seconds, 1),
        }
    result: dict[str, Any] = {
        "backbone": args.backbone,
        "target": args.target,
        "camera": args.camera,
        "image_size": args.image_size,
        "prompt_scheme": args.prompt_scheme,
        "episodes": len(episodes),
        "frames": len(samples),
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "baseline_heldout_r2": baseline,
        "vla": fits,
    }
    write_result(args.json, result, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
