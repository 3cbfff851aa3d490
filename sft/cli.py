"""`python -m sft {train, evaluate, sample, push}`: each sub-command maps its arguments onto a dataclass config."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from datasets_build.cli import run_cli
from datasets_build.configs import build_config, load_yaml, parse_overrides


def _train(args: argparse.Namespace) -> int:
    from sft.config import SFTTrainConfig
    from sft.train import train

    where = args.config
    cfg = build_config(SFTTrainConfig, load_yaml(args.config), parse_overrides(args.overrides), where=where)
    summary = train(cfg)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from sft.evaluate import EvaluateConfig, evaluate, markdown_table

    flags = {
        "checkpoint": args.checkpoint,
        "data": args.data,
        "max_samples": args.max_samples,
        "max_new_tokens": args.max_new_tokens,
        "out": args.out,
    }
    cfg = build_config(EvaluateConfig, flags, parse_overrides(args.overrides), where="evaluate")
    result = evaluate(cfg)
    print(json.dumps(result["per_task"], indent=2, sort_keys=True) if args.json else markdown_table(result["per_task"]))
    return 0


def _push(args: argparse.Namespace) -> int:
    from sft.push import PushConfig, push

    flags = {"checkpoint": args.checkpoint, "repo_id": args.repo_id, "private": args.private}
    if args.revision:
        flags["revision"] = args.revision
    cfg = build_config(PushConfig, flags, parse_overrides(args.overrides), where="push")
    print(push(cfg))
    return 0


def _sample(args: argparse.Namespace) -> int:
    from sft.omni_head import sample_to_png

    print(sample_to_png(args.checkpoint, args.image, args.prompt, args.kind, args.out, seed=args.seed))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m sft`."""
    parser = argparse.ArgumentParser(prog="python -m sft", description="Post-train Qwen-VL models on corpus shards.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="SFT a VLM on shard sets (TRL SFTTrainer)", description=_train_help())
    p.add_argument("config", help="recipe YAML mapping onto SFTTrainConfig")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_steps=10")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="generate answers on shards and score them per task")
    p.add_argument("checkpoint", help="checkpoint folder or Hub id")
    p.add_argument("--data", action="append", required=True, help="shard folder, glob or Hub dataset id (repeatable)")
    p.add_argument("--max-samples", type=int, default=None, help="score at most this many samples")
    p.add_argument("--max-new-tokens", type=int, default=64, help="generation length limit")
    p.add_argument("--out", default=None, help="folder for eval.json and eval.md")
    p.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    p.add_argument("overrides", nargs="*", help="key=value overrides of EvaluateConfig")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "sample",
        help="generate a depth / segmentation map or image with a checkpoint's omni-generation head (PNG)",
        description="Run the VLM on an image and prompt, condition the omni head on its query tokens, and write the "
        "generated map as PNG (depth: 16-bit millimetres; segmentation: the corpus palette).",
    )
    p.add_argument("checkpoint", help="checkpoint folder with omni_head/")
    p.add_argument("--image", required=True, help="input image file")
    p.add_argument("--prompt", required=True, help="instruction, e.g. 'Generate the depth map of this image.'")
    p.add_argument("--kind", default="depth", help="depth, segmentation, image or future_frame [depth]")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--seed", type=int, default=0, help="noise seed [0]")
    p.set_defaults(func=_sample)

    p = sub.add_parser("push", help="upload a checkpoint folder to the Hugging Face Hub")
    p.add_argument("checkpoint", help="checkpoint folder")
    p.add_argument("repo_id", help="ORG/NAME of the model repo (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", default=None, help="branch to commit to")
    p.add_argument("overrides", nargs="*", help="key=value overrides of PushConfig (retries, backoff_s, ...)")
    p.set_defaults(func=_push)
    return parser


def _train_help() -> str:
    return (
        "Train on webdataset shard sets with loss on the assistant answers. The run folder gets "
        "checkpoints/checkpoint-N (resumable, every trainer.save_steps) and final/ (the checkpoint folder)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m sft`."""
    args = build_parser().parse_args(argv)
    return run_cli(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
