"""`python -m evaluation report`: results -> paper-style tables, box plots over checkpoints, capability scatter.

Rows are models (a results argument `NAME=PATH` names its row; otherwise the policy's folder
name or the sweep's run name), columns are benchmarks as in the paper's Tables 1-4 and 10:
CALVIN ABC-D average length (and success after 1..5), SimplerEnv-Bridge per task and average,
LIBERO-10 success rate, demo per task and average. Several results of one row and benchmark
(checkpoints x chunk modes of a sweep) are reported best-of, as the paper does, and drawn as
Fig. 4-style box plots. With `capability` (a CSV `model,score`) a Fig. 3-style scatter per
benchmark shows the VLA score against the VLM score with a least-squares line, Pearson r and R^2.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets_build.errors import ConfigError, DataError
from evaluation.protocol import headline
from evaluation.results import SUMMARY_FILE, load_results, read_json

BENCHMARK_NAMES: dict[str, str] = {
    "calvin": "CALVIN ABC-D",
    "simpler": "SimplerEnv-Bridge",
    "maniskill": "SimplerEnv-Bridge",
    "libero": "LIBERO-10",
    "demo": "Demo",
}
SWEEP_FILE = "sweep.json"


@dataclass
class ReportConfig:
    """Which results to tabulate and plot, and where."""

    results: list[str] = field(default_factory=list)  # folders / summary.json / sweep folders, optionally NAME=PATH
    out: str = ""
    baseline: str | None = None  # row the deltas are taken against
    capability: str | None = None  # CSV with columns model,score
    title: str = "VLA results"
    allow_incomplete: bool = False  # report unfinished runs, marked with *, instead of refusing them


@dataclass
class Cell:
    """All scores of one row on one benchmark (one per checkpoint / chunk mode); the best is reported."""

    metric: str
    scores: list[float] = field(default_factory=list)
    best_metrics: dict[str, Any] = field(default_factory=dict)
    incomplete: bool = False  # some result behind this cell did not finish every episode

    @property
    def best(self) -> float:
        """The best-of score."""
        return max(self.scores)


def _summaries(spec: str, allow_incomplete: bool = False) -> list[tuple[str, dict[str, Any]]]:
    name, _, raw = spec.rpartition("=") if "=" in spec else ("", "", spec)
    path = Path(raw)
    if path.is_dir() and (path / SWEEP_FILE).is_file() and not (path / SUMMARY_FILE).is_file():
        sweep = read_json(path / SWEEP_FILE)
        row = name or Path(str(sweep.get("run", path))).name
        found = load_results((str(path / r["path"]) for r in sweep.get("results", [])), allow_incomplete)
        return [(row, s) for s in found]
    if path.is_dir() and not (path / SUMMARY_FILE).is_file():
        nested = sorted(path.rglob(SUMMARY_FILE))
        if not nested:
            raise DataError("no summary.json or sweep.json inside", path)
        found = load_results((p.parent for p in nested), allow_incomplete)
        return [(name or path.name, s) for s in found]
    (summary,) = load_results([path], allow_incomplete)
    return [(name or Path(str(summary.get("policy") or path)).name or path.name, summary)]


def collect(specs: list[str], allow_incomplete: bool = False) -> dict[str, dict[str, Cell]]:
    """row -> benchmark -> Cell, in the order rows first appear (shards and unfinished runs: see load_results)."""
    table: dict[str, dict[str, Cell]] = {}
    for spec in specs:
        for row, summary in _summaries(spec, allow_incomplete):
            sim, metric = str(summary["sim"]), str(summary.get("metric", "success"))
            cell = table.setdefault(row, {}).setdefault(sim, Cell(metric))
            cell.incomplete |= not summary.get("complete", True)
            score = headline(metric, summary["metrics"])
            if not cell.scores or score > cell.best:
                cell.best_metrics = summary["metrics"]
            cell.scores.append(score)
    return table


def _columns(table: dict[str, dict[str, Cell]]) -> list[tuple[str, str, str]]:
    """(sim, key, header): CALVIN SR after 1..5 + avg len; per-task rates + average for the others."""
    columns: list[tuple[str, str, str]] = []
    sims = list(dict.fromkeys(sim for row in table.values() for sim in row))
    for sim in sims:
        name = BENCHMARK_NAMES.get(sim, sim)
        cells = [row[sim] for row in table.values() if sim in row]
        if cells[0].metric == "chain":
            columns += [(sim, f"after:{k}", f"{name} {k}") for k in range(1, 6)]
            columns.append((sim, "headline", f"{name} Avg. Len."))
        else:
            tasks = sorted({t for c in cells for t in c.best_metrics.get("per_task", {})})
            if len(tasks) > 1:
                columns += [(sim, f"task:{t}", f"{name} {t}") for t in tasks]
            columns.append((sim, "headline", f"{name} Avg." if len(tasks) > 1 else name))
    return columns


def _value(cell: Cell, key: str) -> float | None:
    if key == "headline":
        return cell.best
    if key.startswith("after:"):
        return 100.0 * float(cell.best_metrics["success_rate_after"][key.removeprefix("after:")])
    task = cell.best_metrics.get("per_task", {}).get(key.removeprefix("task:"))
    return None if task is None else 100.0 * float(task["success_rate"])


def _fmt(value: float | None, metric: str, key: str) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if metric == "chain" and key == "headline" else f"{value:.1f}"


def build_rows(table: dict[str, dict[str, Cell]], baseline: str | None) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows; with `baseline`, each other row's cells carry their delta `(+x)`."""
    if baseline is not None and baseline not in table:
        raise ConfigError(f"baseline: no row named {baseline!r}; rows: {list(table)}")
    columns = _columns(table)
    header = ["Model", *(h for _, _, h in columns)]
    rows = []
    for name, cells in table.items():
        row = [name]
        for sim, key, _ in columns:
            cell = cells.get(sim)
            value = None if cell is None else _value(cell, key)
            text = _fmt(value, cell.metric if cell else "", key)
            if cell is not None and cell.incomplete and value is not None:
                text += "*"
            base_cell = table[baseline].get(sim) if baseline else None
            base = None if base_cell is None else _value(base_cell, key)
            if baseline and name != baseline and value is not None and base is not None and cell is not None:
                text += f" ({'+' if value - base >= 0 else ''}{_fmt(value - base, cell.metric, key)})"
            row.append(text)
        rows.append(row)
    return header, rows


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(header: list[str], rows: list[list[str]]) -> str:
    """The table as CSV."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _tex(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


def to_latex(header: list[str], rows: list[list[str]], caption: str) -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_tex(caption)}}}",
        r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(_tex(h) for h in header) + r" \\",
        r"\midrule",
        *(" & ".join(_tex(c) for c in r) + r" \\" for r in rows),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def _pyplot() -> Any:
    import matplotlib as mpl

    mpl.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    return paths


def box_plots(table: dict[str, dict[str, Cell]], out: Path) -> list[Path]:
    """Fig. 4 style: per benchmark, one box per model over its checkpoints / chunk modes."""
    plt = _pyplot()
    sims = list(dict.fromkeys(sim for row in table.values() for sim in row))
    fig, axes = plt.subplots(1, len(sims), figsize=(4.5 * len(sims), 3.6), squeeze=False)
    for ax, sim in zip(axes[0], sims, strict=True):
        names = [n for n, cells in table.items() if sim in cells]
        data = [table[n][sim].scores for n in names]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
        chain = table[names[0]][sim].metric == "chain"
        ax.set_ylabel("Avg. Len." if chain else "Success rate (%)")
        ax.set_title(BENCHMARK_NAMES.get(sim, sim))
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths = _save(fig, out, "checkpoints_boxplot")
    plt.close(fig)
    return paths


def read_capability(path: str | Path) -> dict[str, float]:
    """`model,score` CSV (header row required) -> {model: score}."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"model", "score"} <= set(reader.fieldnames):
            raise DataError("needs a header with columns model,score", path)
        scores = {}
        for number, row in enumerate(reader, 2):
            try:
                scores[row["model"]] = float(row["score"])
            except (TypeError, ValueError) as exc:  # noqa: PERF203 (a bad line is the error to report)
                raise DataError(f"line {number}: score {row['score']!r} is not a number", path, "score") from exc
    return scores


def correlation(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Pearson r, R^2, p-value and the least-squares line y = slope x + intercept."""
    from scipy import stats

    fit = stats.linregress(xs, ys)
    r = float(fit.rvalue)
    return {"r": r, "r2": r * r, "p": float(fit.pvalue), "slope": float(fit.slope), "intercept": float(fit.intercept)}


def capability_plots(
    table: dict[str, dict[str, Cell]], capability: dict[str, float], out: Path
) -> tuple[list[Path], dict[str, Any]]:
    """Fig. 3 style: VLA score against VLM capability per benchmark (models in both, at least 3)."""
    plt = _pyplot()
    sims = list(dict.fromkeys(sim for row in table.values() for sim in row))
    fits: dict[str, Any] = {}
    usable = [s for s in sims if sum(1 for n, c in table.items() if s in c and n in capability) >= 3]
    if not usable:
        return [], fits
    fig, axes = plt.subplots(1, len(usable), figsize=(4.5 * len(usable), 3.6), squeeze=False)
    for ax, sim in zip(axes[0], usable, strict=True):
        names = [n for n, c in table.items() if sim in c and n in capability]
        xs = [capability[n] for n in names]
        ys = [table[n][sim].best for n in names]
        fit = correlation(xs, ys)
        fits[sim] = {**fit, "models": names}
        ax.scatter(xs, ys)
        for x, y, n in zip(xs, ys, names, strict=True):
            ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        line_x = [min(xs), max(xs)]
        ax.plot(line_x, [fit["slope"] * x + fit["intercept"] for x in line_x], "--", color="tab:red")
        ax.set_title(f"{BENCHMARK_NAMES.get(sim, sim)}: r={fit['r']:.3f}, R²={fit['r2']:.3f}")
        ax.set_xlabel("VLM capability score")
        ax.set_ylabel("Avg. Len." if table[names[0]][sim].metric == "chain" else "Success rate (%)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    paths = _save(fig, out, "capability_correlation")
    plt.close(fig)
    return paths, fits


def report(cfg: ReportConfig) -> list[Path]:
    """Write table.md / table.csv / table.tex, the box plots and (with capability) the correlation plots."""
    if not cfg.results:
        raise ConfigError("results: name at least one results folder")
    if not cfg.out:
        raise ConfigError("out: a report folder is required")
    table = collect(cfg.results, cfg.allow_incomplete)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    header, rows = build_rows(table, cfg.baseline)
    marked = any(c.incomplete for cells in table.values() for c in cells.values())
    note = " * unfinished run: fewer episodes than its protocol." if marked else ""
    written = []
    for name, text in (
        ("table.md", to_markdown(header, rows) + (f"\n{note.strip()}\n" if note else "")),
        ("table.csv", to_csv(header, rows)),
        ("table.tex", to_latex(header, rows, cfg.title + note)),
    ):
        (out / name).write_text(text)
        written.append(out / name)
    written += box_plots(table, out)
    if cfg.capability:
        paths, fits = capability_plots(table, read_capability(cfg.capability), out)
        written += paths
        import json

        clean = {
            s: {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in f.items()}
            for s, f in fits.items()
        }
        (out / "correlation.json").write_text(json.dumps(clean, indent=2) + "\n")
        written.append(out / "correlation.json")
    return written


__all__ = ["ReportConfig", "build_rows", "collect", "correlation", "report", "to_csv", "to_latex", "to_markdown"]
