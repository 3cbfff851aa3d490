"""GPU check: real-size VLA and SFT training and inference on one GPU, in one command, with no downloads.

    bash benchmarks/gpu_check.sh             # on an H100 / H200: under 8 minutes
    bash benchmarks/gpu_check.sh --cpu       # the same code path on tiny configs, two steps (the test suite runs it)

Models: the paper's real configurations (`datasets_build.vlm_families.real_config`) of Qwen2.5-VL-3B, Qwen3-VL-4B
and PaliGemma-2 with random weights initialised on the GPU, and the tiny processors of their families
(`datasets_build.tiny_models.real_size_folder`). Everything runs through the project's own code:
1. VLA training as `vla train` runs it (`vla.train.train_step`: fp32 master weights, bf16 autocast, AdamW,
   gradient clipping) at the paper's per-GPU batch (CALVIN: 128 over 8 GPUs = 16): samples/s, tokens/s, model
   FLOPs utilisation against the device's dense bf16 peak (PaLM's 6N + 12 L s h FLOPs per token, LLM over the
   sequence and vision tower over its patches), peak memory;
2. `Policy.act` latency p50 / p90 at batch 1 and `act_batch` throughput at 8 and 32 (bf16 inference weights);
3. one SFT step with FAST tokens (Qwen3-VL-4B, vocab_tail, vision frozen as in Table 4, TRL's trainer through
   `sft.train.build_trainer`) on a fast_tokens corpus built from demo-sim episodes;
4. on CUDA, the engines: `accelerate launch --config_file recipes/accelerate/{zero2,zero3,fsdp}.yaml` of two
   `vla train` steps on a tiny model, then a resume to a third step, and `sft train` under fsdp and zero3.
A section that runs out of memory is recorded as such and the next one runs. Writes
benchmarks/results/gpu_<device>.json (or --out DIR) and prints a table.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="gpu-check-hf-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import gc
import importlib.util
import json
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from accelerate import Accelerator  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from datasets_build.precision import compute_dtype, dtype_name, inference_dtype  # noqa: E402
from datasets_build.tiny_models import build_tiny_model, install_tiny_backbones, real_size_folder  # noqa: E402
from datasets_build.vlm_families import LAYER_CLASSES, PAPER_BACKBONES  # noqa: E402
from vla.configuration_vla import VLAConfig  # noqa: E402
from vla.data import VLACollator, VLASample  # noqa: E402
from vla.engines import make_engine  # noqa: E402
from vla.modeling_vla import VLAPolicyModel  # noqa: E402
from vla.normalization import ActionNormalizer  # noqa: E402
from vla.policy import Policy  # noqa: E402
from vla.train import train_step  # noqa: E402

VLA_MODELS = ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen3-VL-4B-Instruct", "google/paligemma2-3b-pt-224")
SFT_MODEL = "Qwen/Qwen3-VL-4B-Instruct"
ENGINE_MODEL = "Qwen/Qwen3-VL-2B-Instruct"  # tiny, for the engine launches
PAPER_PER_GPU_BATCH = 16  # CALVIN: 128 over 8 A100s
CHUNK = 10
INSTRUCTIONS = (
    "open the drawer",
    "push the pink block to the left",
    "put the carrot on the plate",
    "turn on the light bulb",
)
# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) by device name, most specific first.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100", 989.4),
    ("H800", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
)


def _device_peak(name: str) -> float | None:
    return next((peak * 1e12 for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 1024**3 if device.type == "cuda" else None


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _folder(repo_id: str, root: Path, cpu: bool) -> Path:
    """Real-size config + tiny processor (GPU), or the tiny model laid out like `repo_id` (--cpu)."""
    out = root / repo_id.replace("/", "--")
    if cpu:
        return build_tiny_model(PAPER_BACKBONES[repo_id], out, repo_id=repo_id)
    return real_size_folder(repo_id, out)


def _normalizer() -> ActionNormalizer:
    bound = [0.02, 0.02, 0.02, 0.05, 0.05, 0.05, 1.0]
    stats = {"action": {"q01": [-b for b in bound], "q99": bound, "mean": [0.0] * 7, "std": bound}}
    return ActionNormalizer.from_stats(stats)


def _samples(n: int, seed: int) -> list[VLASample]:
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        actions = rng.uniform(-1, 1, (CHUNK, 7)).astype(np.float32)
        actions[:, 6] = rng.integers(0, 2, CHUNK)
        image = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
        samples.append(VLASample(image, INSTRUCTIONS[i % len(INSTRUCTIONS)], actions, np.ones(CHUNK, dtype=bool)))
    return samples


def _flops_per_sample(model: VLAPolicyModel, text_tokens: float, patches: int) -> float:
    """Training FLOPs of one sample: 6 N + 12 L s h per token (PaLM, appendix B) for the LLM over its sequence (its
    word embeddings are a lookup, not a matmul) and the vision tower over its patches, + 6 N for the head."""
    vision = model.backbone.module("vision_tower")
    llm = model.backbone.module("language_model")
    n_vision = sum(p.numel() for p in vision.parameters())
    n_llm = sum(p.numel() for p in llm.parameters()) - model.backbone.word_embeddings.weight.numel()
    n_head = sum(p.numel() for p in model.head.parameters())
    text = model.vlm.config.get_text_config()
    vision_cfg = model.vlm.config.vision_config
    layers = int(getattr(text, "num_hidden_layers", None) or text.layers)
    v_layers = int(getattr(vision_cfg, "depth", None) or vision_cfg.num_hidden_layers)
    llm_flops = text_tokens * (6 * n_llm + 12 * layers * text_tokens * int(text.hidden_size))
    vision_flops = patches * (6 * n_vision + 12 * v_layers * patches * int(vision_cfg.hidden_size))
    return float(llm_flops + vision_flops + 6 * n_head)


def vla_section(repo_id: str, root: Path, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Training steps, act latency and act_batch throughput of one backbone."""
    result: dict[str, Any] = {"model": repo_id}
    _free(device)
    folder = _folder(repo_id, root, args.cpu)
    accelerator = Accelerator(mixed_precision="bf16", cpu=device.type == "cpu")
    with torch.device(device):  # random init directly on the device
        model = VLAPolicyModel.build(VLAConfig(backbone=str(folder), chunk_size=CHUNK, from_scratch=True))
    result["params"] = sum(p.numel() for p in model.parameters())
    result["master_dtypes"] = sorted({dtype_name(p.dtype) for p in model.parameters() if p.requires_grad})
    family = model.backbone.family
    engine = make_engine(accelerator, "single", LAYER_CLASSES[family], compute_dtype("bf16"))

    def make_optimizer(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=2e-5, weight_decay=0.0)

    prepared, optimizer = engine.prepare(model, make_optimizer)
    batch = {k: v.to(device) for k, v in VLACollator(model.backbone)(_samples(args.batch, 0)).items()}
    text_tokens = float(batch["attention_mask"].sum()) / args.batch
    patches = int(batch["pixel_values"].shape[0]) // args.batch if family.startswith("qwen") else 256
    result.update({"per_gpu_batch": args.batch, "sequence_tokens": text_tokens})
    prepared.train()
    losses = []
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            _sync(device)
            start = time.perf_counter()
        metrics, _ = train_step(accelerator, engine, prepared, optimizer, None, iter([batch]), 1, 1.0, step + 1, "gpu")
        losses.append(metrics["loss"].item())
    _sync(device)
    seconds = (time.perf_counter() - start) / args.steps
    flops = _flops_per_sample(model, text_tokens, patches) * args.batch
    peak = _device_peak(torch.cuda.get_device_name()) if device.type == "cuda" else None
    result["train"] = {
        "step_s": seconds,
        "samples_per_s": args.batch / seconds,
        "tokens_per_s": args.batch * text_tokens / seconds,
        "model_tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / peak if peak else None,
        "peak_memory_gib": _peak_gib(device),
        "losses": losses,
        "finite": all(np.isfinite(losses)),
    }
    del optimizer, prepared, engine
    _free(device)
    # inference: the backbone in the device's inference dtype, query and head fp32 (Policy.from_pretrained's rule)
    model.eval()
    model.vlm.to(inference_dtype(device))
    policy = Policy(model, _normalizer(), device)
    image = _samples(1, 1)[0].image
    for _ in range(args.warmup):
        policy.act([image], INSTRUCTIONS[0])
    latencies = []
    for _ in range(args.acts):
        _sync(device)
        t0 = time.perf_counter()
        policy.act([image], INSTRUCTIONS[0])
        _sync(device)
        latencies.append((time.perf_counter() - t0) * 1000)
    cuts = statistics.quantiles(latencies, n=10) if len(latencies) > 1 else latencies * 9
    result["act"] = {"p50_ms": statistics.median(latencies), "p90_ms": cuts[8], "calls": len(latencies)}
    for size in (8, 32):
        images = [[s.image] for s in _samples(size, 2)]
        texts = [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(size)]
        policy.act_batch(images, texts)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.batch_repeats):
            policy.act_batch(images, texts)
        _sync(device)
        result[f"act_batch_{size}_obs_per_s"] = size * args.batch_repeats / (time.perf_counter() - t0)
    result["inference_peak_memory_gib"] = _peak_gib(device)
    del policy, model
    _free(device)
    return result


def _demo(args: argparse.Namespace, root: Path) -> Path:
    if args.demo_dir:
        return Path(args.demo_dir)
    from datasets_build.demo_episodes import DemoEpisodesConfig, record_demo_episodes

    out = root / "demo"
    record_demo_episodes(DemoEpisodesConfig(out=str(out), episodes=2, seed=0))
    return out


def fast_corpus(demo: Path, root: Path) -> tuple[Path, Path]:
    """A FAST tokenizer fitted on the demo episodes (up to 1024 tokens) and a fast_tokens corpus of them."""
    from datasets_build.corpora import BuildConfig, build_corpus
    from datasets_build.fast.fit import FitFastConfig, fit_fast

    tokenizer, corpus = root / "fast", root / "fast_tokens"
    fit_fast(FitFastConfig(source="demo", input=str(demo), out=str(tokenizer), horizon=4, vocab_size=1024))
    options = {"tokenizer": str(tokenizer), "stride": 4}
    build_corpus(BuildConfig(name="fast_tokens", input=str(demo), out=str(corpus), max_samples=16, options=options))
    return tokenizer, corpus


class _NoSave(TrainerCallback):
    """Keeps the Trainer from writing its end-of-training checkpoint."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        control.should_save = False
        return control


def sft_section(tokenizer: Path, corpus: Path, root: Path, device: torch.device, args: argparse.Namespace) -> dict:
    """One SFT step with FAST tokens (vocab_tail) through `sft.train.build_trainer` on a real-size model."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from datasets_build.configs import build_config
    from sft.config import SFTTrainConfig
    from sft.model import LoadedModel, load_processor

    _free(device)
    folder = _folder(SFT_MODEL, root / "sft_model", args.cpu)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(folder, trust_remote_code=False))
    loaded = LoadedModel(model, load_processor(str(folder)), PAPER_BACKBONES[SFT_MODEL])
    fields = {
        "model": str(folder),
        "data": [{"path": str(corpus)}],
        "output_dir": str(root / "sft_run"),
        "shuffle_buffer": 4,
        "freeze": {"vision_tower": True},
        "fast": {"tokenizer": str(tokenizer), "mapping": "vocab_tail"},
        "trainer": {
            "max_steps": 1,
            "save_steps": 100,
            "logging_steps": 1,
            "learning_rate": 2e-5,
            "per_device_train_batch_size": args.sft_batch,
            "bf16": True,
        },
    }
    from sft.train import build_trainer

    run = build_trainer(build_config(SFTTrainConfig, fields, where="gpu_check"), verbose=False, loaded=loaded)
    run.trainer.add_callback(_NoSave())  # a real-size checkpoint would take tens of GB of the node's disk
    t0 = time.perf_counter()
    output = run.trainer.train()
    _sync(device)
    seconds = time.perf_counter() - t0
    logged = [h for h in run.trainer.state.log_history if "loss" in h]
    optimizer = run.trainer.optimizer
    result = {
        "model": SFT_MODEL,
        "fast": run.fast.describe() if run.fast else None,
        "step_s": seconds,
        "train_runtime_s": output.metrics.get("train_runtime"),
        "loss": float(logged[-1]["loss"]) if logged else None,
        "optimizer_param_dtypes": sorted(
            {dtype_name(p.dtype) for g in (optimizer.param_groups if optimizer else []) for p in g["params"]}
        ),
        "parameter_groups": [row.to_dict() for row in run.groups],
        "peak_memory_gib": _peak_gib(device),
    }
    del run, model, loaded
    _free(device)
    return result


def _launch(command: list[str], env: dict[str, str], timeout: int) -> tuple[bool, float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO)
    tail = "" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1][-300:]
    return done.returncode == 0, time.perf_counter() - t0, tail


def engines_section(demo: Path, corpus: Path, root: Path, deadline: float) -> dict[str, Any]:
    """Each accelerate engine config launched on one GPU: two `vla train` steps, a resume, and `sft train`."""
    import yaml

    install_tiny_backbones(ids=[ENGINE_MODEL])
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--config_file"]
    results: dict[str, Any] = {}
    jobs: list[tuple[str, str, list[str]]] = []
    for name in ("zero2", "zero3", "fsdp"):
        cfg = {
            "out": str(root / f"engine-{name}"),
            "steps": 2,
            "batch_size": 4,
            "save_every": 1,
            "log_every": 1,
            "progress": False,
            "model": {"backbone": ENGINE_MODEL, "chunk_size": 4},
            "data": {"source": "demo", "path": str(demo), "num_workers": 0, "shuffle_buffer": 8},
        }
        (root / f"engine-{name}.yaml").write_text(yaml.safe_dump(cfg))
        train = ["-m", "vla", "train", str(root / f"engine-{name}.yaml")]
        jobs.append((f"vla_{name}", name, train))
        jobs.append((f"vla_{name}_resume", name, [*train, "steps=3", "resume=true"]))
    for name in ("fsdp", "zero3"):
        cfg = {
            "model": ENGINE_MODEL,
            "data": [{"path": str(corpus)}],
            "output_dir": str(root / f"engine-sft-{name}"),
            "shuffle_buffer": 4,
            "trainer": {"max_steps": 2, "save_steps": 2, "per_device_train_batch_size": 2, "bf16": True},
        }
        (root / f"engine-sft-{name}.yaml").write_text(yaml.safe_dump(cfg))
        jobs.append((f"sft_{name}", name, ["-m", "sft", "train", str(root / f"engine-sft-{name}.yaml")]))
    has_deepspeed = importlib.util.find_spec("deepspeed") is not None
    for label, name, job in jobs:
        if time.perf_counter() > deadline:
            results[label] = {"ok": None, "skipped": "time budget"}
            continue
        if name.startswith("zero") and not has_deepspeed:
            results[label] = {"ok": None, "skipped": "pip install 'vlm4vla-toolkit[deepspeed]'"}
            continue
        config = str(REPO / "recipes" / "accelerate" / f"{name}.yaml")
        ok, seconds, error = _launch([*accelerate, config, *job], env, timeout=300)
        results[label] = {"ok": ok, "seconds": seconds, **({"error": error} if error else {})}
    return results


def _table(report: dict[str, Any]) -> str:
    header = (
        f"{'model':<32} {'samples/s':>9} {'tokens/s':>9} {'MFU':>6} {'peak GiB':>8} "
        f"{'act p50':>8} {'act p90':>8} {'b8 obs/s':>9} {'b32 obs/s':>9}"
    )
    lines = [header]
    for row in report["vla"]:
        if "error" in row:
            lines.append(f"{row['model']:<32} {row['error']}")
            continue
        train = row["train"]
        mfu = f"{train['mfu'] * 100:.1f}%" if train["mfu"] is not None else "-"
        peak = f"{train['peak_memory_gib']:.1f}" if train["peak_memory_gib"] is not None else "-"
        lines.append(
            f"{row['model']:<32} {train['samples_per_s']:>9.1f} {train['tokens_per_s']:>9.0f} {mfu:>6} {peak:>8} "
            f"{row['act']['p50_ms']:>7.1f}ms {row['act']['p90_ms']:>7.1f}ms "
            f"{row['act_batch_8_obs_per_s']:>9.1f} {row['act_batch_32_obs_per_s']:>9.1f}"
        )
    sft = report.get("sft", {})
    if "error" in sft:
        lines.append(f"SFT FAST step ({SFT_MODEL}): {sft['error']}")
    elif sft:
        lines.append(
            f"SFT FAST step ({SFT_MODEL}, {sft['fast']['mapping']}, {sft['fast']['fast_vocab_size']} FAST tokens): "
            f"{sft['step_s']:.1f} s, loss {sft['loss']:.3f}, masters {sft['optimizer_param_dtypes']}"
        )
    for label, engine in report.get("engines", {}).items():
        state = {True: "ok", False: "FAILED", None: "skipped"}[engine["ok"]]
        lines.append(f"engine {label:<20} {state} {engine.get('error', engine.get('skipped', ''))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every section, write the JSON report, print the table; exit 1 if a section failed (OOM excepted)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="dry mode: tiny configs on the CPU, two training steps")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="folder of gpu_<device>.json")
    parser.add_argument("--models", nargs="*", default=list(VLA_MODELS), help="backbones of the VLA sections")
    parser.add_argument("--batch", type=int, help=f"per-GPU training batch [{PAPER_PER_GPU_BATCH}; --cpu 2]")
    parser.add_argument("--demo-dir", help="recorded demo episodes (default: record 2)")
    parser.add_argument("--no-engines", action="store_true", help="skip the accelerate engine launches")
    parser.add_argument("--budget-s", type=float, default=450.0, help="engine launches stop after this [450]")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU node, or pass --cpu for the dry mode")
    started = time.perf_counter()
    device = torch.device("cpu" if args.cpu else "cuda")
    args.batch = args.batch or (2 if args.cpu else PAPER_PER_GPU_BATCH)
    args.warmup, args.steps = (1, 1) if args.cpu else (2, 5)  # --cpu: two steps in all
    args.acts, args.batch_repeats = (2, 1) if args.cpu else (30, 5)
    args.sft_batch = 2 if args.cpu else 4
    name = "cpu-dryrun" if args.cpu else re.sub(r"[^A-Za-z0-9]+", "_", torch.cuda.get_device_name()).strip("_")
    report: dict[str, Any] = {
        "device": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "mode": "cpu dry run (tiny configs)" if args.cpu else "real-size configs, random weights",
        "vla": [],
    }
    failed = False
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        root = Path(scratch)
        for repo_id in args.models:
            try:
                report["vla"].append(vla_section(repo_id, root, device, args))
            except Exception as exc:  # one section's failure must not hide the others' numbers
                failed = failed or not _is_oom(exc)
                report["vla"].append({"model": repo_id, "error": _error(exc)})
            _free(device)
        demo = _demo(args, root)
        tokenizer, corpus = fast_corpus(demo, root)
        try:
            report["sft"] = sft_section(tokenizer, corpus, root, device, args)
        except Exception as exc:
            failed = failed or not _is_oom(exc)
            report["sft"] = {"error": _error(exc)}
        if device.type == "cuda" and not args.no_engines:
            report["engines"] = engines_section(demo, corpus, root, started + args.budget_s)
            failed = failed or any(e["ok"] is False for e in report["engines"].values())
    report["wall_s"] = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gpu_{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(path)
    print(_table(report))
    print(f"wrote {path} ({report['wall_s']:.0f} s)")
    return 1 if failed else 0


def _error(exc: BaseException) -> str:
    if _is_oom(exc):
        return "out of memory (see `python -m vla info --memory` for the engines that shard it)"
    traceback.print_exc()
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"


if __name__ == "__main__":
    sys.exit(main())
