"""Fuzz every reader and parser with hypothesis: cases tried and escapes (non-toolkit exceptions) per target.

Only the toolkit's own error types (`datasets_build.errors.ToolkitError`: one line naming file and field) may
leave a reader; anything else is an escape, listed with an example case and its traceback. Exit 1 on any escape.
Usage: python benchmarks/fuzz_all.py [--cases 10000] [--only npz,hdf5] [--seed 0] [--memory-gb 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.reliability.fuzz_targets import TARGETS, fixtures_in, fuzz


def memory_mb() -> tuple[int, int]:
    """This process's address space and resident set in MB now (the cap applies to the former; Linux only)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields.get("VmSize", "0 kB").split()[0]) >> 10, int(fields.get("VmRSS", "0 kB").split()[0]) >> 10


def main(argv: list[str] | None = None) -> int:
    """Run the targets; print one row per target and the first example of each escape."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases per target (default 10000)")
    parser.add_argument(
        "--only", default="", help="comma-separated target names: " + ", ".join(t.name for t in TARGETS)
    )
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    parser.add_argument("--memory-gb", type=int, default=8, help="address-space limit of this process (default 8)")
    parser.add_argument("--json", default="", help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.cases < 1:
        parser.error("--cases must be >= 1")
    chosen = [t for t in TARGETS if not args.only or t.name in args.only.split(",")]
    unknown = set(filter(None, args.only.split(","))) - {t.name for t in TARGETS}
    if unknown:
        parser.error(f"--only: unknown target(s) {sorted(unknown)}")
    # a case that makes a reader allocate without bound shows up as a MemoryError escape, not as the OOM killer
    resource.setrlimit(resource.RLIMIT_AS, (args.memory_gb << 30, args.memory_gb << 30))
    rows: list[dict[str, Any]] = []
    print(f"{'target':<20}{'cases':>8}{'refused':>9}{'escapes':>9}{'seconds':>9}{'vm MB':>8}{'rss MB':>8}", flush=True)
    with fixtures_in() as fx:
        for target in chosen:
            started = time.perf_counter()
            report = fuzz(target, fx, args.cases, args.seed)
            seconds = time.perf_counter() - started
            vm_mb, rss_mb = memory_mb()
            print(
                f"{target.name:<20}{report.cases:>8}{report.refused:>9}{report.escaped:>9}{seconds:>9.1f}"
                f"{vm_mb:>8}{rss_mb:>8}",
                flush=True,
            )
            for signature, (count, example, trace) in report.escapes.items():
                print(f"  ESCAPE x{count}: {signature}\n    case: {example}\n" + trace.rstrip()[-1500:], flush=True)
            rows.append(
                {"target": target.name, "cases": report.cases, "refused": report.refused, "escapes": report.escaped,
                 "escape_sites": sorted(report.escapes), "seconds": round(seconds, 1), "vm_mb_after": vm_mb,
                 "rss_mb_after": rss_mb}
            )  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": args.seed, "targets": rows}, indent=2) + "\n")
    short = [r["target"] for r in rows if r["cases"] < args.cases]
    if short:
        print(f"note: fewer cases than asked for {short} (hypothesis ran out of distinct cases)")
    failed = sum(r["escapes"] for r in rows)
    print(f"total: {sum(r['cases'] for r in rows)} cases, {failed} escapes")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
