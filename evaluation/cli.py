"""`python -m evaluation {run, merge, sweep, report, calvin-sequences, sim-env}`: sub-commands mapping flags onto
configs.

Flags cover the common settings; any config field can also be set as `key=value` (e.g.
`sim_options.suite=libero_10`). Expected errors print one `error: ...` line and exit 2.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from datasets_build.cli import run_cli
from datasets_build.configs import build_config, parse_overrides


def _flags(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _run(args: argparse.Namespace) -> int:
    from evaluation.run import RunConfig, run

    names = ("sim", "policy", "api_key_env", "out", "chunk_mode", "trials", "workers", "num_shards", "shard_index")
    flags = _flags(args, (*names, "video"))
    flags["overwrite"] = args.overwrite
    if args.no_batch:
        flags["batch_inference"] = False
    cfg = build_config(RunConfig, flags, parse_overrides(args.overrides), where="run")
    summary = run(cfg)
    print(json.dumps(summary["metrics"], indent=2))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from evaluation.merge import MergeConfig, merge

    flags = {"shards": list(args.shards), "out": args.out, "overwrite": args.overwrite}
    cfg = build_config(MergeConfig, flags, where="merge")
    summary = merge(cfg)
    print(f"{len(summary['merged_from'])} shards, {summary['episodes_expected']} episodes -> {args.out}")
    print(json.dumps(summary["metrics"], indent=2))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from evaluation.sweep import SweepConfig, sweep

    flags = _flags(args, ("sim", "run", "out", "trials", "workers", "repeats"))
    modes = [m for m in args.chunk_modes or [] if "=" not in m]
    overrides = [*(m for m in args.chunk_modes or [] if "=" in m), *args.overrides]  # key=value after the modes
    if modes:
        flags["chunk_modes"] = modes
    cfg = build_config(SweepConfig, flags, parse_overrides(overrides), where="sweep")
    result = sweep(cfg)
    print(json.dumps(result["best"], indent=2))
    return 0


def _report(args: argparse.Namespace) -> int:
    from evaluation.report import ReportConfig, report

    flags = _flags(args, ("out", "baseline", "capability", "title", "paper", "layout", "caption", "from_step"))
    flags["results"] = list(args.results)
    flags["allow_incomplete"] = args.allow_incomplete
    cfg = build_config(ReportConfig, flags, where="report")
    written = report(cfg)
    print("\n".join(str(p) for p in written))
    return 0


def _calvin_sequences(args: argparse.Namespace) -> int:
    from datasets_build.errors import ConfigError
    from datasets_build.outputs import check_output_file, write_text_atomic
    from evaluation.calvin_sequences import chains_digest, get_sequences, to_json

    if args.num < 1:
        raise ConfigError(f"calvin-sequences: --num: must be >= 1, got {args.num}")
    out = check_output_file(args.out)  # before the generation, not after it
    chains = get_sequences(args.num, cache_dir=args.cache_dir)
    write_text_atomic(out, to_json(chains))
    print(f"{len(chains)} chains -> {out} (sha256 {chains_digest(chains)})")
    return 0


def _sim_env(args: argparse.Namespace) -> int:
    from evaluation.sim_env import SimEnvConfig, build_sim_env

    flags = _flags(args, ("sim", "out", "python"))
    flags["extra"], flags["overwrite"] = list(args.extra or []), args.overwrite
    python = build_sim_env(build_config(SimEnvConfig, flags, where="sim-env"))
    print(f"{args.sim} environment ready: pass sim_options.python={python} to `python -m evaluation run`")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of `python -m evaluation`."""
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="roll a policy out in a simulator (resumable; episodes.jsonl + summary.json)",
        description="Evaluate one policy on one simulator's protocol. Rerunning into the same --out skips "
        "finished trials.",
    )
    run.add_argument("--sim", required=True, help="demo | libero | calvin | simpler | maniskill")
    run.add_argument(
        "--policy", required=True, help="checkpoint folder or Hub id (vla.Policy), ws://HOST:PORT, 'zero', 'replay:DIR'"
    )
    run.add_argument(
        "--api-key-env", dest="api_key_env", metavar="VAR", help="the policy server's API key is in $VAR [VLA_API_KEY]"
    )
    run.add_argument("--out", required=True, help="results folder")
    run.add_argument("--chunk-mode", dest="chunk_mode", choices=("full", "half", "one"), help="[full]")
    run.add_argument("--trials", type=int, help="trials per task (CALVIN: chains) [protocol's count]")
    run.add_argument("--workers", type=int, help="simulator processes [1]")
    run.add_argument("--no-batch", action="store_true", help="one policy call per environment, not act_batch")
    run.add_argument(
        "--num-shards", dest="num_shards", type=int, help="split the trials into this many jobs (then merge) [1]"
    )
    run.add_argument("--shard-index", dest="shard_index", type=int, help="which split this job runs, 0-based [0]")
    run.add_argument("--video", type=int, help="mp4 of the first N trials of each task [0]")
    run.add_argument("--overwrite", action="store_true", help="discard results already in --out")
    run.add_argument(
        "overrides",
        nargs="*",
        help="config key=value (e.g. sim_options.suite=libero_10; sim_options.python=ENV/bin/python runs the "
        "simulator in its own environment, see `sim-env`)",
    )
    run.set_defaults(func=_run)

    merge = sub.add_parser(
        "merge",
        help="join the shard runs of one evaluation (--num-shards N) into one results folder",
        description="Check that the shard runs are every shard 0..N-1 of one evaluation, each complete, "
        "and write one results folder (episodes.jsonl, summary.json) as an unsharded run would.",
    )
    merge.add_argument("shards", nargs="+", help="results folders of the shard runs")
    merge.add_argument("--out", required=True, help="results folder of the merged run")
    merge.add_argument("--overwrite", action="store_true", help="replace a merged run already in --out")
    merge.set_defaults(func=_merge)

    sweep = sub.add_parser(
        "sweep",
        help="every checkpoint of a training run x every chunk mode; best-of reported, all kept",
        description="Evaluate every saved checkpoint of a training run folder with every chunk mode.",
    )
    sweep.add_argument("--sim", required=True, help="simulator name")
    sweep.add_argument("--run", required=True, help="training run folder (checkpoint-* subfolders)")
    sweep.add_argument("--out", help="results folder [RUN/eval-SIM]")
    sweep.add_argument("--chunk-modes", dest="chunk_modes", nargs="+", help="subset of full half one [all]")
    sweep.add_argument("--trials", type=int, help="trials per task")
    sweep.add_argument("--workers", type=int, help="simulator processes")
    sweep.add_argument("--repeats", type=int, help="runs per setting, averaged (stochastic policies) [1]")
    sweep.add_argument("overrides", nargs="*", help="config key=value")
    sweep.set_defaults(func=_sweep)

    report = sub.add_parser(
        "report",
        help="paper-style tables (Markdown, CSV, LaTeX), box plots and correlation plots",
        description="Tables in the layout of the paper's Tables 1-4 and 10, Fig. 4 box plots over "
        "checkpoints and the Fig. 3 capability scatter.",
    )
    report.add_argument(
        "results", nargs="+", help="results folders, summary.json files or sweep folders; NAME=PATH names the row"
    )
    report.add_argument("--out", required=True, help="report folder")
    report.add_argument("--baseline", help="row name the deltas are taken against")
    report.add_argument("--capability", help="CSV model,score of a VLM capability benchmark (Fig. 3)")
    report.add_argument("--title", help="table caption")
    report.add_argument("--paper", help="print the paper's numbers beside ours: table1 ... table8, table10")
    report.add_argument("--layout", choices=("rows", "grid"), help="grid: results named ROW@COLUMN (Table 4)")
    report.add_argument("--caption", help="a note printed under the table")
    report.add_argument("--from-step", type=int, help="box plots use checkpoints from this step on (Fig. 4)")
    report.add_argument(
        "--allow-incomplete",
        dest="allow_incomplete",
        action="store_true",
        help="report unfinished runs, marked with * (refused otherwise)",
    )
    report.set_defaults(func=_report)

    seqs = sub.add_parser(
        "calvin-sequences",
        help="write the CALVIN evaluation chains (identical to upstream get_sequences)",
        description="Write the first N CALVIN ABC-D evaluation chains as a JSON list of "
        "[initial_state, [subtask x 5]].",
    )
    seqs.add_argument("--num", type=int, default=1000, help="number of chains [1000]")
    seqs.add_argument("--out", required=True, help="output JSON file")
    seqs.add_argument("--cache-dir", dest="cache_dir", help="cache folder [~/.cache/vlm4vla/calvin_sequences]")
    seqs.set_defaults(func=_calvin_sequences, overrides=[])

    env = sub.add_parser(
        "sim-env",
        help="build a venv for one simulator's workers, with the simulator's own pins",
        description="Create a virtual environment at OUT with what `evaluation.worker` and the simulator need "
        "(evaluation/sim_envs/SIM.txt), for `evaluation run ... sim_options.python=OUT/bin/python`.",
    )
    env.add_argument("sim", help="demo | libero | calvin | simpler | maniskill")
    env.add_argument("out", help="folder of the new environment")
    env.add_argument("--python", help="base interpreter, e.g. python3.10 [this one]")
    env.add_argument("--extra", nargs="*", help="more requirements, e.g. openpi-client==0.1.2")
    env.add_argument("--overwrite", action="store_true", help="rebuild an environment this command built")
    env.set_defaults(func=_sim_env, overrides=[])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m evaluation`."""
    args = build_parser().parse_args(argv)
    return run_cli(args.func, args)
