"""`python -m datasets_build COMMAND`: one sub-command per job; each maps its flags onto a dataclass config."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from datasets_build.configs import build_config, parse_overrides
from datasets_build.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, ToolkitError, one_line


def _demo_episodes(args: argparse.Namespace) -> int:
    from datasets_build.demo_episodes import DemoEpisodesConfig, record_demo_episodes

    flags = {
        "out": args.out,
        "episodes": args.episodes,
        "seed": args.seed,
        "workers": args.workers,
        "overwrite": args.overwrite,
        "video": args.video,
    }
    if args.tasks:
        flags["tasks"] = args.tasks
    if args.noise is not None:
        flags["noise"] = args.noise
    cfg = build_config(DemoEpisodesConfig, flags, parse_overrides(args.overrides), where="demo-episodes")
    summary = record_demo_episodes(cfg)
    print(json.dumps(summary, indent=2))
    return 0


def _expert_eval(args: argparse.Namespace) -> int:
    from datasets_build.sim.evaluate import ExpertEvalConfig, evaluate_expert, format_table

    flags: dict[str, Any] = {"episodes_per_task": args.episodes_per_task, "seed": args.seed, "workers": args.workers}
    if args.tasks:
        flags["tasks"] = args.tasks
    if args.noise is not None:
        flags["noise"] = args.noise
    cfg = build_config(ExpertEvalConfig, flags, parse_overrides(args.overrides), where="expert-eval")
    results = evaluate_expert(cfg)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    worst = min((r["success_rate"] for r in results.values()), default=0.0)
    if args.min_success is not None and worst < args.min_success:
        print(f"error: a task family is below --min-success {args.min_success} ({worst:.2f})", file=sys.stderr)
        return 1
    return 0


def _open(args: argparse.Namespace) -> Any:
    from datasets_build.errors import ConfigError
    from datasets_build.sources import open_source

    options = parse_overrides(args.options, where=f"{args.command} options")
    try:
        return open_source(args.source, args.path, skip_bad=args.skip_bad, **options)
    except TypeError as exc:  # an option the source does not take
        raise ConfigError(f"{args.command}: bad option for source {args.source!r} ({exc})") from exc


def _inspect(args: argparse.Namespace) -> int:
    from datasets_build.errors import ConfigError
    from datasets_build.inspection import format_inspection, inspect_source

    if args.max_episodes is not None and args.max_episodes < 1:
        raise ConfigError(f"inspect: --max-episodes: must be >= 1, got {args.max_episodes}")
    info = inspect_source(_open(args), args.max_episodes, args.num_shards, args.shard_index)
    print(json.dumps(info) if args.json else format_inspection(info))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from datasets_build.errors import DataError
    from datasets_build.inspection import source_stats
    from datasets_build.outputs import check_output_file, write_text_atomic

    out = check_output_file(args.out)  # before reading the whole source
    stats = source_stats(_open(args), args.num_shards, args.shard_index)
    if not stats:
        raise DataError("no episodes to compute statistics from", args.path)
    write_text_atomic(out, json.dumps(stats, indent=2))
    print(f"wrote {out} ({stats['action']['count'][0]} steps)")
    return 0


def _fit_fast(args: argparse.Namespace) -> int:
    from datasets_build.fast.fit import FitFastConfig, fit_fast

    flags: dict[str, Any] = {
        "source": args.source,
        "input": args.path,
        "out": args.out,
        "horizon": args.horizon,
        "num_shards": args.num_shards,
        "shard_index": args.shard_index,
        "skip_bad": args.skip_bad,
        "overwrite": args.overwrite,
    }
    for name in ("stride", "vocab_size", "scale", "stats", "max_chunks"):
        if getattr(args, name) is not None:
            flags[name] = getattr(args, name)
    if args.source_option:
        flags["source_options"] = parse_overrides(args.source_option, where="fit-fast --source-option")
    cfg = build_config(FitFastConfig, flags, parse_overrides(args.options, where="fit-fast"), where="fit-fast")
    print(json.dumps(fit_fast(cfg), indent=2))
    return 0


def _tiny_models(args: argparse.Namespace) -> int:
    from datasets_build.tiny_models import build_tiny_model, install_tiny_backbones
    from datasets_build.vlm_families import family_of

    if args.out:
        for family in args.families or []:
            print(build_tiny_model(family, f"{args.out}/{family}", seed=args.seed))
        for repo_id in args.ids or []:
            target = f"{args.out}/{repo_id.replace('/', '--')}"
            print(build_tiny_model(family_of(repo_id), target, seed=args.seed, repo_id=repo_id))
        return 0
    if not args.hf_home:
        from datasets_build.errors import ConfigError

        raise ConfigError(
            "tiny-models: --hf-home is required (random weights under the real Hub ids never go into your default "
            "HF cache; set HF_HOME to that folder to load them, or use --out for plain folders)"
        )
    installed = install_tiny_backbones(args.hf_home, families=args.families, ids=args.ids, seed=args.seed)
    for repo_id, folder in sorted(installed.items()):
        print(f"{repo_id}  {folder}")
    return 0


def _mix(args: argparse.Namespace) -> int:
    from datasets_build.corpora.mix import load_mix_config, mix_shards

    cfg = load_mix_config(
        args.config,
        args.input or (),
        parse_overrides(args.options, where="mix"),
        out=args.out,
        mode=args.mode,
        total=args.total,
        seed=args.seed,
        name=args.name,
        max_samples_per_shard=args.max_samples_per_shard,
        resume=args.resume or None,
        overwrite=args.overwrite or None,
    )
    print(json.dumps(mix_shards(cfg), indent=2))
    return 0


def _build(args: argparse.Namespace) -> int:
    from datasets_build.corpora import BuildConfig, build_corpus

    flags: dict[str, Any] = {
        "name": args.name,
        "source": args.source,
        "input": args.input,
        "out": args.out,
        "max_samples": args.max_samples,
        "seed": args.seed,
        "workers": args.workers,
        "num_shards": args.num_shards,
        "shard_index": args.shard_index,
        "image_size": args.image_size,
        "skip_bad": args.skip_bad,
        "overwrite": args.overwrite,
        "resume": args.resume,
        "options": parse_overrides(args.options, where=f"corpus {args.name} options"),
        "source_options": parse_overrides(args.source_option or [], where="build --source-option"),
    }
    if args.max_samples_per_shard is not None:
        flags["max_samples_per_shard"] = args.max_samples_per_shard
    cfg = build_config(BuildConfig, flags, where="build")
    print(json.dumps(build_corpus(cfg), indent=2))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from datasets_build.corpora.merge import MergeConfig, merge_corpus

    cfg = MergeConfig(inputs=list(args.inputs), out=args.out, overwrite=args.overwrite)
    print(json.dumps(merge_corpus(cfg), indent=2))
    return 0


def _push(args: argparse.Namespace) -> int:
    from datasets_build.push import DatasetPushConfig, push_dataset

    flags: dict[str, Any] = {"folder": args.folder, "repo_id": args.repo_id, "private": args.private}
    if args.license:
        flags["license"] = args.license
    cfg = build_config(DatasetPushConfig, flags, parse_overrides(args.options, where="push"), where="push")
    print(push_dataset(cfg))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from datasets_build.corpora import verify_corpus

    report = verify_corpus(args.path, args.name)
    print(json.dumps(report, indent=2))
    return 1 if report["errors"] else 0


def _import(args: argparse.Namespace) -> int:
    from datasets_build.errors import ConfigError

    def need(flag: str) -> str:
        value = getattr(args, flag.replace("-", "_"))
        if not value:
            raise ConfigError(f"import {args.format}: --{flag} is required")
        return str(value)

    size = 224 if args.image_size is None else args.image_size  # embodied corpora: 224 unless asked
    common = {"image_size": size, "max_samples": args.max_samples, "overwrite": args.overwrite}
    # general VQA keeps full-size images unless --image-size is given (OCR and charts need the pixels)
    general = {"image_size": args.image_size, "max_samples": args.max_samples, "overwrite": args.overwrite}
    if args.format == "robo2vlm-parquet":
        from datasets_build.corpora.importers.robo2vlm_parquet import import_robo2vlm_parquet

        summary = import_robo2vlm_parquet(args.input, args.out, **common)
    elif args.format == "robopoint-json":
        from datasets_build.corpora.importers.robopoint_json import import_robopoint_json

        summary = import_robopoint_json(args.input, need("image-root"), args.out, **common)
    elif args.format == "llava-json":
        from datasets_build.corpora.importers.llava_json import import_llava_json

        summary = import_llava_json(
            args.input, need("image-root"), args.out, dataset=args.dataset, skip_bad=args.skip_bad, **general
        )
    elif args.format == "hf-dataset":
        from datasets_build.corpora.importers.hf_dataset import import_hf_dataset

        summary = import_hf_dataset(
            args.input,
            args.split,
            args.out,
            args.messages_column,
            args.images_column or None,
            dataset=args.dataset,
            skip_bad=args.skip_bad,
            **general,
        )
    elif args.format == "vica-json":
        from datasets_build.corpora.importers.vica_json import import_vica_json

        summary = import_vica_json(
            args.input, need("video-root"), args.out, num_frames=args.num_frames, skip_bad=args.skip_bad, **common
        )
    else:
        from datasets_build.corpora.importers.sharerobot_json import import_sharerobot_json

        summary = import_sharerobot_json(
            args.input, need("image-root"), args.out, kind=args.kind, skip_bad=args.skip_bad, **common
        )
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _add_partition_args(parser: argparse.ArgumentParser) -> None:
    """--skip-bad and the deterministic --num-shards/--shard-index split of episodes (for job arrays)."""
    parser.add_argument("--skip-bad", action="store_true", help="skip and count bad episodes instead of failing")
    parser.add_argument("--num-shards", type=int, default=1, help="split episodes into this many parts [1]")
    parser.add_argument("--shard-index", type=int, default=0, help="which part to read [0]")


def _add_source_option_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source-option",
        action="append",
        metavar="KEY=VALUE",
        help="a keyword option of the source, repeatable (e.g. bridge_labels=paper, mode=segments)",
    )


def _add_source_args(parser: argparse.ArgumentParser) -> None:
    from datasets_build.sources import available_sources

    parser.add_argument("source", choices=available_sources(), help="source format")
    parser.add_argument("path", help="dataset folder or file")
    _add_partition_args(parser)
    parser.add_argument(
        "options", nargs="*", metavar="key=value", help="source options (e.g. mode=segments, bridge_labels=paper)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every datasets_build command."""
    from datasets_build.corpora.base import available_corpora
    from datasets_build.sources import available_sources

    parser = argparse.ArgumentParser(prog="python -m datasets_build", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo-episodes",
        help="record scripted-expert episodes of the demo tabletop sim (LeRobot v3.0 with geometry)",
        description="Record scripted-expert episodes of the demo sim as a LeRobot v3.0 dataset with depth, "
        "segmentation, cameras and object poses as extra features.",
    )
    demo.add_argument("--out", required=True, help="output dataset folder (must not exist or be empty)")
    demo.add_argument("--episodes", type=int, default=12, help="number of episodes (tasks cycle) [12]")
    demo.add_argument("--seed", type=int, default=0, help="first seed; episode i uses seed+i [0]")
    demo.add_argument("--workers", type=int, default=1, help="rollout processes [1]")
    demo.add_argument("--tasks", nargs="*", help="task families (default: all)")
    demo.add_argument("--noise", type=float, help="expert action noise (default: the expert's)")
    demo.add_argument("--video", action="store_true", help="store RGB as AV1 mp4 instead of PNG")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    demo.add_argument("overrides", nargs="*", metavar="key=value", help="other DemoEpisodesConfig fields")
    demo.set_defaults(func=_demo_episodes)

    ev = sub.add_parser(
        "expert-eval",
        help="success rate of the demo sim's scripted expert per task family",
        description="Roll out the scripted expert on N seeds per task family and report the success rate.",
    )
    ev.add_argument("--episodes-per-task", type=int, default=30, help="seeds per family [30]")
    ev.add_argument("--seed", type=int, default=0, help="first seed [0]")
    ev.add_argument("--workers", type=int, default=1, help="processes [1]")
    ev.add_argument("--tasks", nargs="*", help="task families (default: all)")
    ev.add_argument("--noise", type=float, help="expert action noise (default: the expert's)")
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ev.add_argument("--min-success", type=float, help="exit 1 if any family is below this rate")
    ev.add_argument("overrides", nargs="*", metavar="key=value", help="other ExpertEvalConfig fields")
    ev.set_defaults(func=_expert_eval)

    ins = sub.add_parser(
        "inspect",
        help="episodes, steps, cameras, action ranges, instructions and geometry of a robot dataset",
        description="Summarise a robot dataset through its source reader (images are not decoded where avoidable).",
    )
    _add_source_args(ins)
    ins.add_argument("--json", action="store_true", help="print one JSON object")
    ins.add_argument("--max-episodes", type=int, help="stop after this many episodes")
    ins.set_defaults(func=_inspect)

    st = sub.add_parser(
        "stats",
        help="per-dimension action/state statistics (LeRobot meta/stats.json layout)",
        description="One streaming pass: mean, std, min, max, count and quantiles q01..q99 of actions and state.",
    )
    _add_source_args(st)
    st.add_argument("--out", required=True, help="output JSON file")
    st.set_defaults(func=_stats)

    tm = sub.add_parser(
        "tiny-models",
        help="install tiny random VLMs of every paper family under the real Hub ids (offline demo and tests)",
        description="Build tiny randomly initialised models with the real classes of each family, each laid out like "
        "its release (weights dtype, embedding rows padded past the tokenizer, tied or untied lm_head), and place "
        "them in the Hugging Face cache under the paper's backbone ids (never over a real download); with --out, "
        "write the folders of --families / --ids there instead.",
    )
    tm.add_argument("--hf-home", help="HF home to install into (required unless --out; never the default cache)")
    tm.add_argument("--families", nargs="*", help="only these families (qwen2_5_vl qwen3_vl qwen3_vl_moe ...)")
    tm.add_argument("--ids", nargs="*", help="only these of the nine Hub ids")
    tm.add_argument(
        "--out", help="write model folders here instead of installing (--families: OUT/FAMILY, --ids: OUT/ORG--NAME)"
    )
    tm.add_argument("--seed", type=int, default=0, help="weight seed [0]")
    tm.set_defaults(func=_tiny_models)

    mx = sub.add_parser(
        "mix",
        help="interleave shard sets (built corpora, imported general VQA) into one corpus such as vqa_mix",
        description="Deterministic smooth weighted interleaving of shard sets, by weight (--total split by largest "
        "remainder) or by exact per-input counts; the card records the exact counts. Resumable with --resume.",
    )
    mx.add_argument("--config", help="YAML file of MixConfig fields (inputs: [{path, weight | count, name, repeat}])")
    mx.add_argument(
        "--input",
        action="append",
        metavar="[NAME=]PATH[@N]",
        help="shard folder, glob or Hub id; N is its weight (mode weight) or count (mode count); once per input "
        "(replaces the config file's inputs)",
    )
    mx.add_argument("--out", help="output shard folder")
    mx.add_argument("--mode", choices=["weight", "count"], help="split --total by weights, or take each input's count")
    mx.add_argument("--total", type=int, help="mode weight: samples in all (default: the most the inputs allow)")
    mx.add_argument("--seed", type=int, help="seed of the per-input subsets [0]")
    mx.add_argument("--name", help="dataset name of the shards [vqa_mix]")
    mx.add_argument("--max-samples-per-shard", type=int, help="samples per shard [2000]")
    mx.add_argument("--resume", action="store_true", help="continue an interrupted --resume run in --out")
    mx.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    mx.add_argument("options", nargs="*", metavar="key=value", help="other MixConfig fields (e.g. progress=false)")
    mx.set_defaults(func=_mix)

    ff = sub.add_parser(
        "fit-fast",
        help="fit a FAST action tokenizer (DCT + BPE) on a source's action chunks",
        description="Fit the FAST tokenizer on windows of --horizon actions and save tokenizer.json + "
        "fast_config.json; prints tokens per chunk and the round-trip error.",
    )
    ff.add_argument("source", choices=available_sources(), help="source format")
    ff.add_argument("path", help="dataset folder or file")
    ff.add_argument("--horizon", type=int, required=True, help="actions per chunk")
    ff.add_argument("--out", required=True, help="output tokenizer folder")
    ff.add_argument("--stride", type=int, help="steps between chunk starts [1]")
    ff.add_argument("--vocab-size", type=int, help="BPE vocabulary size [1024]")
    ff.add_argument("--scale", type=float, help="DCT coefficient scale before rounding [10]")
    ff.add_argument("--stats", help="stats.json from the stats command (default: computed from the episodes)")
    ff.add_argument("--max-chunks", type=int, help="fit on at most this many chunks (evenly strided)")
    ff.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    _add_source_option_arg(ff)
    _add_partition_args(ff)
    ff.add_argument("options", nargs="*", metavar="key=value", help="other FitFastConfig fields")
    ff.set_defaults(func=_fit_fast)

    bd = sub.add_parser(
        "build",
        help="build an auxiliary corpus (e.g. robo2vlm) from a robot dataset into webdataset shards",
        description="Stream episodes from a source through a corpus builder into shards with a dataset card. "
        "Same inputs and seed give byte-identical shards, whatever --workers.",
    )
    bd.add_argument("name", metavar="NAME", help=f"corpus name: {', '.join(available_corpora())}")
    bd.add_argument("--source", required=True, choices=available_sources(), help="source format")
    bd.add_argument("--input", required=True, help="dataset folder or file")
    bd.add_argument("--out", required=True, help="output shard folder (must not exist or be empty)")
    bd.add_argument("--max-samples", type=int, help="stop after this many samples")
    bd.add_argument("--seed", type=int, default=0, help="seed of every per-episode generator [0]")
    bd.add_argument("--workers", type=int, default=1, help="builder processes (output is identical) [1]")
    bd.add_argument("--image-size", type=int, default=224, help="longer image side in pixels [224]")
    _add_source_option_arg(bd)
    _add_partition_args(bd)
    bd.add_argument("--max-samples-per-shard", type=int, help="samples per shard [2000]")
    bd.add_argument(
        "--resume", action="store_true", help="continue an interrupted build in --out from its last complete shard"
    )
    bd.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    bd.add_argument("options", nargs="*", metavar="key=value", help="corpus options (e.g. per_type=3)")
    bd.set_defaults(func=_build)

    mg = sub.add_parser(
        "merge",
        help="join the shard folders of one corpus built as a job array (--num-shards/--shard-index) into one",
        description="Copy the shards of every part (each checked against its card's sha256) into one folder with "
        "one card: counts and skip reasons summed, the build config without shard_index. Refuses parts of "
        "different corpora or configs, a missing, repeated or unfinished shard index.",
    )
    mg.add_argument("inputs", nargs="+", metavar="SHARD_DIR", help="the parts' shard folders (any order)")
    mg.add_argument("--out", required=True, help="output shard folder (must not exist or be empty)")
    mg.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    mg.set_defaults(func=_merge)

    ps = sub.add_parser(
        "push",
        help="upload a shard folder to the Hugging Face Hub as a dataset repo (load_dataset('ORG/NAME') reads it)",
        description="Re-hash every shard against dataset_card.json (refused on any mismatch, nothing uploaded), then "
        "upload the tars, the card and a README dataset card (license, task categories, configs, features, counts, "
        "build config, fingerprints, how answers were made and verified) in one commit. Token: HF_TOKEN or "
        "`hf auth login`.",
    )
    ps.add_argument("folder", help="shard folder with dataset_card.json")
    ps.add_argument("repo_id", help="ORG/NAME of the dataset repo (created if missing)")
    ps.add_argument("--private", action="store_true", help="create the repo private")
    ps.add_argument("--license", help="license id for the README header [other]")
    ps.add_argument("options", nargs="*", metavar="key=value", help="other DatasetPushConfig fields (revision=...)")
    ps.set_defaults(func=_push)

    vf = sub.add_parser(
        "verify",
        help="re-check every answer of a built corpus from its recorded facts (exit 1 on any error)",
        description="Re-derive every sample's answer from its meta with the corpus's verify; print per-task "
        "error rates as JSON.",
    )
    vf.add_argument("path", help="shard folder with dataset_card.json")
    vf.add_argument("--name", help="corpus name (default: the card's build_config.name)")
    vf.set_defaults(func=_verify)

    im = sub.add_parser(
        "import",
        help="import a published corpus (Robo2VLM-1, RoboPoint, ViCA-322K, ShareRobot) into shards",
        description="Convert a published auxiliary corpus into the toolkit's shard format with a dataset card.",
    )
    im.add_argument(
        "format",
        choices=["robo2vlm-parquet", "robopoint-json", "vica-json", "sharerobot-json", "llava-json", "hf-dataset"],
        help="published layout",
    )
    im.add_argument("input", help="parquet file/folder, or a json file / folder of json files")
    im.add_argument("--out", required=True, help="output shard folder (must not exist or be empty)")
    im.add_argument(
        "--image-root", help="robopoint-json, sharerobot-json, llava-json: folder the image paths are relative to"
    )
    im.add_argument("--split", default="train", help="hf-dataset: split [train]")
    im.add_argument("--messages-column", default="messages", help="hf-dataset: chat column [messages]")
    im.add_argument("--images-column", default="images", help="hf-dataset: images column ('' = text only) [images]")
    im.add_argument("--dataset", help="llava-json, hf-dataset: dataset name in task names (default: from the input)")
    im.add_argument("--video-root", help="vica-json: folder the records' video paths are relative to")
    im.add_argument("--num-frames", type=int, default=8, help="vica-json: frames decoded per video [8]")
    im.add_argument("--kind", default="auto", help="sharerobot-json: auto, planning, affordance or trajectory [auto]")
    im.add_argument(
        "--skip-bad", action="store_true", help="count bad records instead of failing (not robo2vlm/robopoint)"
    )
    im.add_argument("--image-size", type=int, help="longer image side in pixels [224; general VQA formats: kept as is]")
    im.add_argument("--max-samples", type=int, help="stop after this many samples")
    im.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    im.set_defaults(func=_import)
    return parser


def run_cli(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; expected errors become one line on stderr and an exit code of `errors.EXIT_CODES`."""
    try:
        return func(args)
    except ToolkitError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m datasets_build`."""
    args = parse_args(build_parser(), argv)
    return run_cli(args.func, args)


LIST_FLAGS = ("tasks",)  # nargs="*" flags whose values never hold "=": a key=value after them is an override


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse `argv`, taking key=value tokens as the command's overrides wherever they stand: between or after flags,
    or right after a list flag such as `--tasks a b` that would otherwise swallow them as values."""
    args, extra = parser.parse_known_args(argv)
    keyed = next((name for name in ("options", "overrides") if hasattr(args, name)), None)
    if keyed:
        for flag in LIST_FLAGS:
            values = getattr(args, flag, None)
            if values and any("=" in v for v in values):
                setattr(args, flag, [v for v in values if "=" not in v] or None)
                extra = [*extra, *(v for v in values if "=" in v)]
    if extra and keyed and all("=" in e and not e.startswith("-") for e in extra):
        setattr(args, keyed, [*getattr(args, keyed), *extra])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args
