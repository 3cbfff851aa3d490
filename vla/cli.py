"""`python -m vla {train, serve, presets, download, info}`: argparse sub-commands mapped onto the stage's typed
configs."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from datasets_build.cli import run_cli
from datasets_build.configs import build_config, load_yaml, parse_overrides


def _train(args: argparse.Namespace) -> int:
    from vla.configuration_vla import VLATrainConfig
    from vla.train import train

    layers = [load_yaml(args.config)] if args.config else []
    where = args.config or "vla train"
    cfg = build_config(VLATrainConfig, *layers, parse_overrides(args.overrides), where=where)
    summary = train(cfg)
    print(json.dumps({"checkpoints": summary["checkpoints"], "last": summary.get("last", {})}, indent=2))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from vla.serve import ServeConfig, serve_policy

    flags = {k: v for k, v in vars(args).items() if k in ServeConfig.__dataclass_fields__ and v is not None}
    serve_policy(build_config(ServeConfig, flags, where="vla serve"))
    return 0


def _presets(args: argparse.Namespace) -> int:
    from vla.presets import PRESETS, format_preset, get_preset

    names = [args.name] if args.name else list(PRESETS)
    if args.json:
        print(json.dumps({n: get_preset(n).describe(args.follow, resolved=True) for n in names}, indent=2))
    else:
        print("\n\n".join(format_preset(get_preset(n), args.follow) for n in names))
    return 0


def _download(args: argparse.Namespace) -> int:
    from vla.download import download

    info = download(args.repo_id, revision=args.revision, check=not args.no_check)
    print(f"{info['repo_id']}: {info['bytes'] / 1e9:.2f} GB at {info['path']}")
    if "family" in info:
        print(f"loads as a {info['family']} backbone (hidden {info['hidden']})")
    return 0


def _info(args: argparse.Namespace) -> int:
    from datasets_build.errors import ConfigError

    if args.memory:
        from datasets_build.vlm_families import PAPER_BACKBONES
        from vla.memory import estimate, estimates_json, memory_table

        if args.gpus < 1 or args.batch < 1:
            raise ConfigError("--gpus and --batch must be >= 1")
        names = [args.model] if args.model else list(PAPER_BACKBONES)
        rows = [estimate(n, args.gpus, args.batch, args.gradient_checkpointing, args.chunk_size) for n in names]
        print(json.dumps(estimates_json(rows), indent=2) if args.json else memory_table(rows))
        return 0
    if not args.model:
        raise ConfigError("info: name a MODEL (or pass --memory for the nine paper backbones)")
    from vla.info import format_info, model_info

    info = model_info(args.model, chunk_size=args.chunk_size)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `python -m vla` parser."""
    parser = argparse.ArgumentParser(prog="python -m vla", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train a VLA (backbone + <ActionQuery> + MLP head) on robot data")
    tr.add_argument("config", nargs="?", help="YAML mapping onto VLATrainConfig (optional)")
    tr.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.backbone=... data.path=... steps=100")
    tr.set_defaults(func=_train)

    sv = sub.add_parser(
        "serve",
        help="serve a VLA checkpoint over websockets (openpi's protocol: openpi_client drives it)",
        description="Serve CHECKPOINT_OR_ID to remote clients: metadata on connect, then {'image': uint8 (H, W, 3), "
        "'prompt': str} -> {'actions': float32 (chunk, 7), 'server_timing': {...}}. Requests of all clients are "
        "batched into one forward pass.",
    )
    sv.add_argument("policy", metavar="CHECKPOINT_OR_ID", help="VLA checkpoint folder or Hub id")
    sv.add_argument("--port", type=int, help="[8000]; 0 picks a free port")
    sv.add_argument("--host", help="address to listen on [127.0.0.1]; 0.0.0.0 accepts other machines")
    sv.add_argument("--api-key-env", dest="api_key_env", metavar="VAR", help="refuse clients without the key in $VAR")
    sv.add_argument("--batch-window-ms", dest="batch_window_ms", type=float, help="wait for more clients [5]")
    sv.add_argument("--max-batch", dest="max_batch", type=int, help="largest forward pass [32]")
    sv.add_argument("--device", help="cuda, cuda:1, cpu [cuda when available]")
    sv.set_defaults(func=_serve)

    ps = sub.add_parser("presets", help="the paper presets: resolved values, code-vs-paper choices, deviations")
    ps.add_argument("name", nargs="?", help="one preset (default: all)")
    ps.add_argument("--follow", choices=["code", "paper"], default="code", help="side of each choice [code]")
    ps.add_argument("--json", action="store_true", help="print JSON")
    ps.set_defaults(func=_presets)

    dl = sub.add_parser("download", help="download a backbone (weights + processor) into the HF cache and check it")
    dl.add_argument("repo_id", help="Hub model id, e.g. Qwen/Qwen2.5-VL-3B-Instruct or BAAI/RoboBrain2.0-7B")
    dl.add_argument("--revision", help="branch, tag or commit")
    dl.add_argument("--no-check", action="store_true", help="skip loading it as a backbone")
    dl.set_defaults(func=_download)

    inf = sub.add_parser(
        "info",
        help="parameter counts and head widths of a VLA on MODEL beside Table 9; --memory: per-GPU memory per engine",
    )
    inf.add_argument(
        "model",
        nargs="?",
        help="one of the paper's nine Hub ids (real config, no download), another id or a folder "
        "(with --memory: default all nine)",
    )
    inf.add_argument("--chunk-size", type=int, default=10, help="action chunk of the final layer [10]")
    inf.add_argument(
        "--memory",
        action="store_true",
        help="per-GPU memory of full fine-tuning under DDP, ZeRO-2 and ZeRO-3/FSDP at the paper's batch",
    )
    inf.add_argument("--gpus", type=int, default=8, help="--memory: GPUs the batch is split over [8]")
    inf.add_argument("--batch", type=int, default=128, help="--memory: global batch [128, CALVIN; Bridge 512]")
    inf.add_argument("--gradient-checkpointing", action="store_true", help="--memory: with activation recomputation")
    inf.add_argument("--json", action="store_true", help="print JSON")
    inf.set_defaults(func=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m vla`."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        if args.config and "=" in args.config:  # only overrides were given
            args.overrides, args.config = [args.config, *args.overrides], None
        if extra and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
            extra = []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return run_cli(args.func, args)
