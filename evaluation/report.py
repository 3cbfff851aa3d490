"""`python -m evaluation report`: results -> paper-style tables, box plots over checkpoints, capability scatter.

Rows are models (a results argument `NAME=PATH` names its row; otherwise the policy's folder
name or the sweep's run name), columns are benchmarks as in the paper's Tables 1-4 and 10:
CALVIN ABC-D average length (and success after 1..5), SimplerEnv-Bridge per task and average,
LIBERO-10 success rate, demo per task and average. Several results of one row and benchmark
(checkpoints x chunk modes of a sweep) are reported best-of, as the paper does, and drawn as
Fig. 4-style box plots. With `capability` (a CSV `model,score`) a Fig. 3-style scatter (one panel, a marker
and a least-squares line per benchmark, Pearson r and R^2) shows the VLA score against the VLM score.

With `paper: tableN` every reported column the paper has a number for gets a `(paper)` column beside it, from
`evaluation.paper` (row names are paper row keys, or mapped by `paper_rows`). `layout: grid` lays results named
`ROW@COLUMN` out as rows x columns of one benchmark's headline (Table 4: VLM fine-tuning x VLA vision frozen or
trained), deltas against the `baseline` row per column. Box plots take each checkpoint's best chunk mode from
`from_step` on; for CALVIN, `figure4_calvin` draws the paper's Fig. 4: success after 1..5 subtasks and the
average length / 5, one box per row over its checkpoints.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets_build.errors import ConfigError, DataError
from datasets_build.outputs import staged_output_folder
from evaluation.paper import FIGURE3_FITS, PaperTable, paper_table
from evaluation.protocol import headline
from evaluation.readme import write_readme
from evaluation.results import SUMMARY_FILE, load_results, read_json

BENCHMARK_NAMES: dict[str, str] = {
    "calvin": "CALVIN ABC-D",
    "simpler": "SimplerEnv-Bridge",
    "maniskill": "SimplerEnv-Bridge",
    "libero": "LIBERO-10",
    "demo": "Demo",
}
SWEEP_FILE = "sweep.json"
OUTPUT_KIND = "evaluation report"  # the marker kind of a report folder (datasets_build.outputs)
LAYOUTS = ("rows", "grid")
GRID_SEPARATOR = "@"
_CHECKPOINT_STEP = re.compile(r"checkpoint-(\d+)")


@dataclass
class ReportConfig:
    """Which results to tabulate and plot, and where."""

    results: list[str] = field(default_factory=list)  # folders / summary.json / sweep folders, optionally NAME=PATH
    out: str = ""
    baseline: str | None = None  # row the deltas are taken against
    capability: str | None = None  # CSV with columns model,score
    title: str = "VLA results"
    allow_incomplete: bool = False  # report unfinished runs, marked with *, instead of refusing them
    paper: str | None = None  # a table of evaluation.paper (table1 ... table10): its numbers beside ours
    paper_rows: dict[str, str] = field(default_factory=dict)  # row name -> paper row key (default: the name)
    layout: str = "rows"  # rows | grid (results named ROW@COLUMN)
    caption: str = ""  # printed under the table (e.g. which simulator stood in for which)
    from_step: int = 0  # box plots use checkpoints from this step on (the paper's Fig. 4: 10k..30k)
    paper_sim: str | None = None  # the benchmark a stand-in simulator's results are compared with (tiny profiles)
    compared: str = ""  # README.md: what the rows are and how they differ (a sentence or two)
    chance: float | None = None  # README.md: success (%) of a policy that does nothing useful, for scale
    chance_why: str = ""  # README.md: why that is the chance level
    sft: list[str] = field(default_factory=list)  # `sft evaluate` out folders (NAME=PATH): per-task scores

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout: must be one of {list(LAYOUTS)}, got {self.layout!r}")
        if self.paper:
            paper_table(self.paper)


@dataclass
class Cell:
    """All scores of one row on one benchmark (one per checkpoint / chunk mode); the best is reported."""

    metric: str
    scores: list[float] = field(default_factory=list)
    best_metrics: dict[str, Any] = field(default_factory=dict)
    entries: list[tuple[int | None, dict[str, Any]]] = field(default_factory=list)  # (checkpoint step, metrics)
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
        for result, summary in zip(sweep.get("results", []), found, strict=True):
            summary.setdefault("checkpoint", result.get("checkpoint"))
        return [(row, s) for s in found]
    if path.is_dir() and not (path / SUMMARY_FILE).is_file():
        nested = sorted(path.rglob(SUMMARY_FILE))
        if not nested:
            raise DataError("no summary.json or sweep.json inside", path)
        found = load_results((p.parent for p in nested), allow_incomplete)
        return [(name or path.name, s) for s in found]
    (summary,) = load_results([path], allow_incomplete)
    return [(name or Path(str(summary.get("policy") or path)).name or path.name, summary)]


def checkpoint_step(summary: dict[str, Any]) -> int | None:
    """The training step of the checkpoint a summary evaluated (from the sweep's record or the policy path)."""
    for text in (summary.get("checkpoint"), summary.get("policy"), summary.get("path")):
        found = _CHECKPOINT_STEP.findall(str(text or ""))
        if found:
            return int(found[-1])
    return None


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
            cell.entries.append((checkpoint_step(summary), summary["metrics"]))
    return table


def per_checkpoint(cell: Cell, from_step: int = 0) -> list[dict[str, Any]]:
    """Each checkpoint's metrics in its best chunk mode, from `from_step` on (results with no known checkpoint
    count one each), in step order."""
    best: dict[Any, dict[str, Any]] = {}
    for i, (step, metrics) in enumerate(cell.entries):
        if step is not None and step < from_step:
            continue
        key = ("step", step) if step is not None else ("result", i)
        if key not in best or headline(cell.metric, metrics) > headline(cell.metric, best[key]):
            best[key] = metrics
    return [best[k] for k in sorted(best, key=lambda k: (k[0], k[1] if isinstance(k[1], int) else -1))]


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


def _paper_key(cfg_rows: dict[str, str], row: str) -> str:
    return cfg_rows.get(row, row)


def build_rows(
    table: dict[str, dict[str, Cell]],
    baseline: str | None,
    paper: PaperTable | None = None,
    paper_rows: dict[str, str] | None = None,
    paper_sim: str | None = None,
) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows; with `baseline`, each other row's cells carry their delta `(+x)`; with `paper`,
    each column the paper reports gets a `(paper)` column beside it (with the paper's delta too). With
    `paper_sim`, results of a stand-in simulator (the demo sim in a tiny profile) get the paper's headline of
    that benchmark beside their headline."""
    if baseline is not None and baseline not in table:
        raise ConfigError(f"baseline: no row named {baseline!r}; rows: {list(table)}")
    mapping = paper_rows or {}
    columns = _columns(table)

    def paper_key(sim: str, key: str) -> tuple[str, str]:
        """The paper column beside ours and its metric kind."""
        if paper_sim and sim != paper_sim and key == "headline":
            return f"{paper_sim}:headline", "chain" if paper_sim == "calvin" else "success"
        return f"{sim}:{key}", "chain" if sim == "calvin" else "success"

    paper_columns = {
        (sim, key)
        for sim, key, _ in columns
        if paper is not None
        and any(paper.value(_paper_key(mapping, r), paper_key(sim, key)[0]) is not None for r in table)
    }
    header = ["Model"]
    for sim, key, head in columns:
        header.append(head)
        if (sim, key) in paper_columns:
            stand_in = paper_sim and sim != paper_sim and key == "headline"
            header.append(
                f"{BENCHMARK_NAMES.get(str(paper_sim), paper_sim)} (paper)" if stand_in else f"{head} (paper)"
            )
    rows = []
    for name, cells in table.items():
        row = [name]
        for sim, key, _ in columns:
            cell = cells.get(sim)
            metric = cell.metric if cell else ("chain" if sim == "calvin" else "success")
            value = None if cell is None else _value(cell, key)
            base_cell = table[baseline].get(sim) if baseline else None
            base = None if base_cell is None else _value(base_cell, key)
            delta = baseline is not None and name != baseline
            unfinished = cell is not None and cell.incomplete and value is not None
            row.append(_with_delta(value, base, metric, key, delta, "*" if unfinished else ""))
            if (sim, key) in paper_columns and paper is not None:
                lookup, kind = paper_key(sim, key)
                ours = paper.value(_paper_key(mapping, name), lookup)
                theirs = paper.value(_paper_key(mapping, baseline), lookup) if baseline else None
                row.append(_with_delta(ours, theirs, kind, key, delta))
        rows.append(row)
    return header, rows


def _with_delta(value: float | None, base: float | None, metric: str, key: str, delta: bool, mark: str = "") -> str:
    text = _fmt(value, metric, key) + mark
    if delta and value is not None and base is not None:
        text += f" ({'+' if value - base >= 0 else ''}{_fmt(value - base, metric, key)})"
    return text


def build_grid(
    table: dict[str, dict[str, Cell]],
    baseline: str | None,
    paper: PaperTable | None = None,
    paper_sim: str | None = None,
) -> tuple[list[str], list[list[str]]]:
    """Rows x columns of one benchmark's headline from rows named ROW@COLUMN (Table 4's layout), deltas against
    the `baseline` row in each column, the paper's cell beside each."""
    cells: dict[tuple[str, str], Cell] = {}
    for name, by_sim in table.items():
        row, sep, column = name.rpartition(GRID_SEPARATOR)
        if not sep:
            raise ConfigError(f"layout grid: result {name!r} is not named ROW{GRID_SEPARATOR}COLUMN")
        if len(by_sim) != 1:
            raise ConfigError(f"layout grid: {name!r} has results of several benchmarks ({', '.join(by_sim)})")
        cells[(row, column)] = next(iter(by_sim.values()))
    rows = list(dict.fromkeys(r for r, _ in cells))
    columns = list(dict.fromkeys(c for _, c in cells))
    if baseline is not None and baseline not in rows:
        raise ConfigError(f"baseline: no grid row named {baseline!r}; rows: {rows}")
    sim = paper_sim or next(iter(next(iter(table.values()))))

    def label(key: str) -> str:
        return paper.label(key) if paper is not None else key

    header = ["VLM"]
    for column in columns:
        header.append(label(column))
        if paper is not None:
            header.append(f"{label(column)} (paper)")
    out = []
    for row in rows:
        line = [label(row)]
        for column in columns:
            cell = cells.get((row, column))
            metric = cell.metric if cell else "success"
            value = cell.best if cell else None
            base_cell = cells.get((baseline, column)) if baseline else None
            base = base_cell.best if base_cell else None
            line.append(_with_delta(value, base, metric, "headline", baseline is not None and row != baseline))
            if paper is not None:
                ours = paper.value(row, f"{sim}:headline", column)
                theirs = paper.value(baseline, f"{sim}:headline", column) if baseline else None
                kind = "chain" if sim == "calvin" else "success"
                line.append(_with_delta(ours, theirs, kind, "headline", baseline is not None and row != baseline))
        out.append(line)
    return header, out


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


def box_plots(table: dict[str, dict[str, Cell]], out: Path, from_step: int = 0) -> list[Path]:
    """Fig. 4 style: per benchmark, one box per model over its checkpoints (each in its best chunk mode)."""
    plt = _pyplot()
    sims = list(dict.fromkeys(sim for row in table.values() for sim in row))
    fig, axes = plt.subplots(1, len(sims), figsize=(4.5 * len(sims), 3.6), squeeze=False)
    for ax, sim in zip(axes[0], sims, strict=True):
        names = [n for n, cells in table.items() if sim in cells]
        metric = table[names[0]][sim].metric
        data = [[headline(metric, m) for m in per_checkpoint(table[n][sim], from_step)] or [0.0] for n in names]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
        ax.set_ylabel("Avg. Len." if metric == "chain" else "Success rate (%)")
        ax.set_ylim(0, 5 if metric == "chain" else 100)  # the metric's whole range, not the data's
        ax.set_title(BENCHMARK_NAMES.get(sim, sim))
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths = _save(fig, out, "checkpoints_boxplot")
    plt.close(fig)
    return paths


FIGURE4_DIMENSIONS = ("Task-1", "Task-2", "Task-3", "Task-4", "Task-5", "Avg. Len. / 5")


def figure4_values(metrics: dict[str, Any]) -> list[float]:
    """A CALVIN summary's Fig. 4 dimensions: success after 1..5 subtasks (0-1) and the average length / 5."""
    after = metrics.get("success_rate_after", {})
    return [float(after.get(str(k), 0.0)) for k in range(1, 6)] + [float(metrics.get("avg_len", 0.0)) / 5.0]


def figure4(table: dict[str, dict[str, Cell]], out: Path, from_step: int = 0) -> list[Path]:
    """The paper's Fig. 4 for CALVIN: per dimension, one box per row over its checkpoints from `from_step`."""
    names = [n for n, cells in table.items() if "calvin" in cells]
    if not names:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(FIGURE4_DIMENSIONS) * max(1, len(names)) / 2), 3.8))
    width = 0.8 / len(names)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(names):
        values = [figure4_values(m) for m in per_checkpoint(table[name]["calvin"], from_step)]
        if not values:
            continue
        columns = [[v[d] for v in values] for d in range(len(FIGURE4_DIMENSIONS))]
        positions = [d + (i - (len(names) - 1) / 2) * width for d in range(len(FIGURE4_DIMENSIONS))]
        parts = ax.boxplot(columns, positions=positions, widths=width * 0.9, patch_artist=True, showmeans=True)
        for box in parts["boxes"]:
            box.set_facecolor(colours[i % len(colours)])
            box.set_alpha(0.6)
        parts["boxes"][0].set_label(name)
    ax.set_xticks(range(len(FIGURE4_DIMENSIONS)), FIGURE4_DIMENSIONS)
    ax.set_ylabel("Success rate / Avg. Len. / 5")
    ax.set_title(f"CALVIN ABC-D over checkpoints{f' from step {from_step}' if from_step else ''}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    paths = _save(fig, out, "figure4_calvin")
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
            except (TypeError, ValueError) as exc:
                raise DataError(f"line {number}: score {row['score']!r} is not a number", path, "score") from exc
            if not math.isfinite(scores[row["model"]]):
                raise DataError(f"line {number}: score {row['score']!r} is not a finite number", path, "score")
    return scores


def correlation(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Pearson r, R^2, p-value and the least-squares line y = slope x + intercept."""
    from scipy import stats

    fit = stats.linregress(xs, ys)
    r = float(fit.rvalue)
    return {"r": r, "r2": r * r, "p": float(fit.pvalue), "slope": float(fit.slope), "intercept": float(fit.intercept)}


FIGURE3_STYLE = {"simpler": ("o", "tab:red"), "libero": ("^", "tab:blue"), "calvin": ("s", "tab:green")}


def normalised_score(cell: Cell) -> float:
    """A row's best score on a 0-100 scale for Fig. 3 (CALVIN's average length out of 5 as a percentage)."""
    return cell.best * 20.0 if cell.metric == "chain" else cell.best


def capability_plots(
    table: dict[str, dict[str, Cell]], capability: dict[str, float], out: Path
) -> tuple[list[Path], dict[str, Any]]:
    """Fig. 3: one panel, VLA score (CALVIN as avg. len. / 5 in percent) against VLM capability; per benchmark a
    marker and a least-squares line (benchmarks with at least 3 models in both)."""
    plt = _pyplot()
    sims = list(dict.fromkeys(sim for row in table.values() for sim in row))
    fits: dict[str, Any] = {}
    usable = [s for s in sims if sum(1 for n, c in table.items() if s in c and n in capability) >= 3]
    if not usable:
        return [], fits
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for sim in usable:
        names = [n for n, c in table.items() if sim in c and n in capability]
        xs = [capability[n] for n in names]
        ys = [normalised_score(table[n][sim]) for n in names]
        fit = correlation(xs, ys)
        fits[sim] = {**fit, "models": names, **({"paper": FIGURE3_FITS[sim]} if sim in FIGURE3_FITS else {})}
        marker, colour = FIGURE3_STYLE.get(sim, ("D", "tab:gray"))
        label = f"{BENCHMARK_NAMES.get(sim, sim)}: r={fit['r']:.3f}, R²={fit['r2']:.3f}"
        ax.scatter(xs, ys, marker=marker, color=colour, label=label)
        line_x = [min(xs), max(xs)]
        ax.plot(line_x, [fit["slope"] * x + fit["intercept"] for x in line_x], "--", color=colour)
    ax.set_xlabel("VLM capability score")
    ax.set_ylabel("VLA performance (%; CALVIN: Avg. Len. / 5)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths = _save(fig, out, "capability_correlation")
    plt.close(fig)
    return paths, fits


def report(cfg: ReportConfig) -> list[Path]:
    """Write table.md / table.csv / table.tex, the box plots (Fig. 4 for CALVIN) and, with capability, the
    correlation plot (Fig. 3)."""
    if not cfg.results:
        raise ConfigError("results: name at least one results folder")
    if not cfg.out:
        raise ConfigError("out: a report folder is required")
    table = collect(cfg.results, cfg.allow_incomplete)
    paper = paper_table(cfg.paper) if cfg.paper else None
    capability = read_capability(cfg.capability) if cfg.capability else None  # every input read before writing
    final = Path(cfg.out)
    # a report is a view of results: its own folder is regenerated, any other non-empty folder refused
    with staged_output_folder(final, OUTPUT_KIND, overwrite=True) as out:
        written = _write_report(cfg, table, paper, capability, out)
    return [final / p.relative_to(out) for p in written]


def _write_report(
    cfg: ReportConfig,
    table: dict[str, dict[str, Cell]],
    paper: Any,
    capability: dict[str, float] | None,
    out: Path,
) -> list[Path]:
    """The report's files in `out` (the staging folder)."""
    if cfg.layout == "grid":
        header, rows = build_grid(table, cfg.baseline, paper, cfg.paper_sim)
    else:
        header, rows = build_rows(table, cfg.baseline, paper, cfg.paper_rows, cfg.paper_sim)
    caption = cfg.title + (f" ({paper.caption})" if paper is not None else "")
    marked = any(c.incomplete for cells in table.values() for c in cells.values())
    notes = [n for n in (cfg.caption, "* unfinished run: fewer episodes than its protocol." if marked else "") if n]
    markdown = to_markdown(header, rows) + "".join(f"\n{n}\n" for n in [caption, *notes])
    written = []
    for name, text in (
        ("table.md", markdown),
        ("table.csv", to_csv(header, rows)),
        ("table.tex", to_latex(header, rows, " ".join([caption, *notes]))),
    ):
        (out / name).write_text(text)
        written.append(out / name)
    if cfg.layout == "rows":
        written += box_plots(table, out, cfg.from_step)
        written += figure4(table, out, cfg.from_step)
    written += write_readme(out, cfg.title, table, markdown, cfg.compared, cfg.chance, cfg.chance_why, cfg.sft)
    if capability is not None:
        paths, fits = capability_plots(table, capability, out)
        written += paths
        clean = {s: {k: _finite(v) for k, v in f.items()} for s, f in fits.items()}
        (out / "correlation.json").write_text(json.dumps(clean, indent=2) + "\n")
        written.append(out / "correlation.json")
    return written


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


__all__ = [
    "ReportConfig",
    "build_grid",
    "build_rows",
    "collect",
    "correlation",
    "figure4",
    "per_checkpoint",
    "report",
    "to_csv",
    "to_latex",
    "to_markdown",
]
