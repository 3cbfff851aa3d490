"""VLA policy speed on tiny models (CPU): `act` latency, `act_batch` throughput, and whether the data path keeps up.

Three measurements in one process on the same model:
1. `Policy.act` latency (median ms) and `act_batch` observations/s against `act` called in a loop (ratio);
2. training steps fed by the real data path (demo-sim episodes -> `VLAGlobalDataset` -> DataLoader workers running
   the processor) against the same steps on one synthetic batch held in memory: samples/s and their ratio
   (target >= 0.9: the data path must not be the bottleneck).
With `--real-config`, the backbone is the paper's real configuration with random weights (needs a GPU for useful
numbers: bf16, peak memory). Usage:
    python benchmarks/bench_vla.py [--backbone Qwen/Qwen2.5-VL-3B-Instruct] [--steps 20] [--batch 8] [--json OUT]
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="bench-vla-hf-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from datasets_build.inspection import source_stats
from datasets_build.sources import open_source
from datasets_build.tiny_models import install_tiny_backbones
from vla.configuration_vla import VLAConfig
from vla.data import VLACollator, VLAGlobalDataset, episode_samples
from vla.episode_index import read_layouts
from vla.modeling_vla import VLAPolicyModel
from vla.normalization import ActionNormalizer
from vla.policy import Policy

TARGET_RATIO = 0.9


def _demo(folder: str | None) -> Path:
    if folder:
        return Path(folder)
    from datasets_build.demo_episodes import DemoEpisodesConfig, record_demo_episodes

    out = Path(tempfile.mkdtemp(prefix="bench-vla-demo-")) / "episodes"
    record_demo_episodes(DemoEpisodesConfig(out=str(out), episodes=6, seed=0))
    return out


def _model(args: argparse.Namespace, device: torch.device) -> VLAPolicyModel:
    """The tiny model, or (`--real-config`) the real configuration with random weights initialised on `device` and
    the family's tiny processor, with fp32 master weights as `vla train` holds them (benchmarks/gpu_check.py)."""
    if not args.real_config:
        return VLAPolicyModel.build(VLAConfig(backbone=args.backbone, chunk_size=args.chunk)).to(device)
    from datasets_build.tiny_models import real_size_folder

    folder = real_size_folder(args.backbone, Path(tempfile.mkdtemp(prefix="bench-vla-real-")) / "model")
    with device:
        model = VLAPolicyModel.build(VLAConfig(backbone=str(folder), chunk_size=args.chunk, from_scratch=True))
    return model.to(device)


def _steps(model: VLAPolicyModel, batches: Any, steps: int, device: torch.device) -> float:
    """samples/s of `steps` optimizer steps on `batches` (an iterator of collated batches)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    seen, start = 0, 0.0
    for i in range(steps + 2):  # two warm-up steps
        if i == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, seen = time.perf_counter(), 0
        batch = {k: v.to(device) for k, v in next(batches).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seen += batch["actions"].shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and optionally save) the numbers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="Qwen/Qwen2.5-VL-3B-Instruct", help="one of the paper's nine ids")
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--acts", type=int, default=30, help="timed act calls")
    parser.add_argument("--act-batch", type=int, default=8, help="observations per act_batch call")
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per data path and round")
    parser.add_argument("--batch", type=int, default=8, help="training batch size")
    cores = os.cpu_count() or 1
    parser.add_argument(
        "--workers", type=int, default=max(1, min(2, cores - 1)), help="DataLoader workers of the real data path"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of the training process (default: the cores the loader workers leave, at least 1)",
    )
    parser.add_argument("--demo-dir", help="recorded demo episodes (default: record 6 into a temporary folder)")
    parser.add_argument("--real-config", action="store_true", help="the backbone's real config, random weights")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    threads = args.threads or max(1, cores - args.workers)
    torch.set_num_threads(threads)  # loader workers and training threads share the cores: do not oversubscribe

    install_tiny_backbones(ids=[args.backbone])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    demo = _demo(args.demo_dir)
    source = open_source("demo", demo)
    normalizer = ActionNormalizer.from_stats(source_stats(source, progress=False))
    torch.manual_seed(0)
    model = _model(args, device)

    # 1. inference
    policy = Policy(model, normalizer, device)
    episode = next(source.episodes())
    image = episode.frames[episode.cameras[0]][0]
    for _ in range(3):
        policy.act([image], episode.instruction)
    latencies = []
    for _ in range(args.acts):
        start = time.perf_counter()
        policy.act([image], episode.instruction)
        latencies.append(time.perf_counter() - start)
    act_ms = statistics.median(latencies) * 1e3
    batch_images = [[image]] * args.act_batch
    batch_text = [episode.instruction] * args.act_batch
    policy.act_batch(batch_images, batch_text)
    start = time.perf_counter()
    repeats = max(1, args.acts // args.act_batch)
    for _ in range(repeats):
        policy.act_batch(batch_images, batch_text)
    batch_obs_s = repeats * args.act_batch / (time.perf_counter() - start)
    latencies = []
    for _ in range(args.acts):  # again, so that both are measured under the same load (2 shared cores are noisy)
        start = time.perf_counter()
        policy.act([image], episode.instruction)
        latencies.append(time.perf_counter() - start)
    act_ms = min(act_ms, statistics.median(latencies) * 1e3)
    start = time.perf_counter()
    for _ in range(repeats):
        policy.act_batch(batch_images, batch_text)
    batch_obs_s = max(batch_obs_s, repeats * args.act_batch / (time.perf_counter() - start))

    # 2. training: real data path vs one synthetic batch in memory
    # the demo recording read as a plain LeRobot dataset with the one camera the policy uses (the demo source would
    # also decode depth and segmentation, which a VLA never reads)
    options = {"mapping": {"cameras": {"static": "observation.images.static"}}}
    layouts = read_layouts(open_source("lerobot", demo, **options), progress=False)
    dataset = VLAGlobalDataset(
        "lerobot", str(demo), args.chunk, normalizer, options=options, layouts=layouts, batch_size=args.batch
    )
    collator = VLACollator(model.backbone)
    loader = DataLoader(
        dataset,
        batch_size=args.batch,
        num_workers=args.workers,
        collate_fn=collator,
        prefetch_factor=4 if args.workers else None,
        persistent_workers=args.workers > 0,
    )
    samples = list(itertools.islice(episode_samples(episode, args.chunk, normalizer), args.batch))
    samples = (samples * args.batch)[: args.batch]
    synthetic = collator(samples)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    real_batches = iter(loader)
    synthetic_sps = real_sps = 0.0
    for _ in range(2):  # alternate, best of two each: the same load for both paths
        synthetic_sps = max(synthetic_sps, _steps(model, itertools.repeat(synthetic), args.steps, device))
        real_sps = max(real_sps, _steps(model, real_batches, args.steps, device))
    ratio = real_sps / synthetic_sps

    results: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {device.type}"
        + (f" {torch.cuda.get_device_name()}" if device.type == "cuda" else ""),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "backbone": args.backbone + (" (real config, random weights)" if args.real_config else " (tiny)"),
        "act_latency_ms": round(act_ms, 2),
        "act_obs_per_s": round(1e3 / act_ms, 1),
        "act_batch_size": args.act_batch,
        "act_batch_obs_per_s": round(batch_obs_s, 1),
        "act_batch_vs_act": round(batch_obs_s / (1e3 / act_ms), 2),
        "train_batch": args.batch,
        "train_workers": args.workers,
        "train_torch_threads": threads,
        "train_samples_per_s_data_path": round(real_sps, 2),
        "train_samples_per_s_synthetic": round(synthetic_sps, 2),
        "data_path_ratio": round(ratio, 3),
        "data_path_target": TARGET_RATIO,
        "data_path_ok": ratio >= TARGET_RATIO,
    }
    if device.type == "cuda":
        results["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
