"""A report's README.md: per-task success with its spread over trials, a bar plot, SFT scores and sentences on scale.

Written by `report` beside its tables. The success of a task over n trials (each on its own layout seed) is
given with its binomial standard error, sqrt(p (1 - p) / n): the spread a rate of n seeded trials has. Against
`chance` (the success of a policy that does nothing useful, in percent) the text says how far each row is
above it in units of that error. SFT evaluations (`sft.evaluate`'s eval.json) add a table of per-task scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets_build.errors import DataError
from evaluation.results import read_json

PLOT_STEM = "success_per_task"
SFT_EVAL_FILE = "eval.json"


@dataclass(frozen=True)
class Rate:
    """Successes out of n trials of one task."""

    successes: int
    trials: int

    @property
    def percent(self) -> float:
        """Success rate in percent."""
        return 100.0 * self.successes / self.trials if self.trials else 0.0

    @property
    def stderr(self) -> float:
        """Binomial standard error of the rate over the trials' seeds, in percent points."""
        if not self.trials:
            return 0.0
        p = self.successes / self.trials
        return 100.0 * math.sqrt(p * (1.0 - p) / self.trials)

    def text(self) -> str:
        """`55 % ± 11 (11/20)`."""
        return f"{self.percent:.0f} % ± {self.stderr:.0f} ({self.successes}/{self.trials})"


def task_rates(metrics: dict[str, Any]) -> dict[str, Rate]:
    """Per task of a success-metric summary: its successes out of its episodes."""
    rates = {}
    for task, entry in sorted(metrics.get("per_task", {}).items()):
        episodes = int(entry.get("episodes", 0))
        successes = round(float(entry.get("successes", float(entry.get("success_rate", 0.0)) * episodes)))
        rates[task] = Rate(successes, episodes)
    return rates


def success_table(rows: dict[str, dict[str, Rate]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per policy, one column per task, `rate ± stderr (k/n)` cells."""
    tasks = sorted({t for rates in rows.values() for t in rates})
    header = ["Policy", *tasks]
    body = [[name, *(rates[t].text() if t in rates else "-" for t in tasks)] for name, rates in rows.items()]
    return header, body


def success_plot(rows: dict[str, dict[str, Rate]], out: Path, chance: float | None) -> list[Path]:
    """Grouped bars per task (one per policy) with standard-error whiskers, on a 0-100 % axis."""
    from evaluation.report import _pyplot, _save

    plt = _pyplot()
    tasks = sorted({t for rates in rows.values() for t in rates})
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(tasks) + 2), 3.6))
    for i, (name, rates) in enumerate(rows.items()):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j, t in enumerate(tasks) if t in rates]
        values = [rates[t].percent for t in tasks if t in rates]
        errors = [rates[t].stderr for t in tasks if t in rates]
        ax.bar(xs, values, width, yerr=errors, capsize=3, label=name)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.0f} %)")
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("Success rate (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper right")
    fig.tight_layout()
    paths = _save(fig, out, PLOT_STEM)
    plt.close(fig)
    return paths


def read_sft_eval(spec: str) -> tuple[str, dict[str, dict[str, float]]]:
    """`NAME=FOLDER` (or a folder / eval.json) of `sft.evaluate` -> (name, task -> {metric: value, count})."""
    name, _, raw = spec.rpartition("=") if "=" in spec else ("", "", spec)
    path = Path(raw)
    file = path / SFT_EVAL_FILE if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"no {SFT_EVAL_FILE} (run sft evaluate with an out folder)", path)
    data = read_json(file)
    per_task = data.get("per_task")
    if not isinstance(per_task, dict):
        raise DataError("no per_task scores", file, "per_task")
    return name or path.name, per_task


def sft_table(evals: list[tuple[str, dict[str, dict[str, float]]]]) -> tuple[list[str], list[list[str]]]:
    """One row per task, one column per evaluated checkpoint: its main score (accuracy, else the first one), and a
    last column with the accuracy of a uniform guess where the answers are choices (`chance`)."""
    tasks = sorted({t for _, per_task in evals for t in per_task}, key=lambda t: (t == "all", t))
    with_chance = any("chance" in scores for _, per_task in evals for scores in per_task.values())
    header = ["Task", *(f"{name}" for name, _ in evals), *(["chance"] if with_chance else [])]
    body = []
    for task in tasks:
        cells = []
        for _, per_task in evals:
            scores = per_task.get(task)
            cells.append("-" if scores is None else _score_text(scores))
        if with_chance:
            chance = next((c for _, per_task in evals if (c := _chance(per_task, task)) is not None), None)
            cells.append("-" if chance is None else f"{100 * chance:.0f} %")
        body.append([task, *cells])
    return header, body


def _chance(per_task: dict[str, dict[str, float]], task: str) -> float | None:
    """A task's chance accuracy; for `all` only when every task has one (else it would average a subset)."""
    if task == "all" and any("chance" not in scores for name, scores in per_task.items() if name != "all"):
        return None
    value = per_task.get(task, {}).get("chance")
    return None if value is None else float(value)


SFT_NOTE = (
    "Accuracy of each checkpoint's greedy answers to the samples `sft evaluate` scored; chance is the accuracy of a "
    "uniform guess among each question's options, and an answer that names no option counts as wrong."
)


def _score_text(scores: dict[str, float]) -> str:
    metric = (
        "accuracy" if "accuracy" in scores else next((k for k in scores if k not in ("count", "parsed", "chance")), "")
    )
    if not metric:
        return "-"
    value = float(scores[metric])
    shown = f"{100 * value:.0f} %" if metric == "accuracy" else f"{value:.3g} {metric}"
    return f"{shown} (n={int(scores.get('count', 0))})"


def scale_sentence(rows: dict[str, dict[str, Rate]], chance: float | None, chance_why: str) -> str:
    """How big the numbers are: the best task of each row, and how far above chance in standard errors."""
    parts = []
    for name, rates in rows.items():
        if not rates:
            continue
        task, rate = max(rates.items(), key=lambda item: item[1].percent)
        text = f"{name} {rate.text()} on {task}"
        if chance is not None:
            gap = rate.percent - chance
            spread = max(rate.stderr, 100.0 / max(rate.trials, 1))  # one trial's worth when the error is 0
            text += f" ({gap:+.0f} points over chance, {gap / spread:.1f} standard errors)"
        parts.append(text)
    sentence = "Best task per policy: " + "; ".join(parts) + "."
    if chance is not None:
        sentence += f" Chance is {chance:.0f} %" + (f": {chance_why}" if chance_why else "") + "."
    return sentence


def success_rows(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, Rate]]:
    """From `report.collect`'s table: row -> task -> Rate of each success-metric benchmark's best result (tasks
    prefixed by the benchmark when there are several)."""
    sims = {sim for cells in table.values() for sim, cell in cells.items() if cell.metric != "chain"}
    rows: dict[str, dict[str, Rate]] = {}
    for name, cells in table.items():
        for sim, cell in cells.items():
            if cell.metric == "chain":
                continue
            for task, rate in task_rates(cell.best_metrics).items():
                rows.setdefault(name, {})[task if len(sims) == 1 else f"{sim}/{task}"] = rate
    return rows


def write_readme(
    out: Path,
    title: str,
    table: dict[str, dict[str, Any]],
    headline_markdown: str,
    compared: str = "",
    chance: float | None = None,
    chance_why: str = "",
    sft: list[str] | None = None,
) -> list[Path]:
    """README.md (and the per-task bar plot) of a report folder; returns the files written."""
    rows = success_rows(table)
    written: list[Path] = []
    lines = [f"# {title}", ""]
    intro = " ".join(t for t in (compared.strip(), scale_sentence(rows, chance, chance_why) if rows else "") if t)
    if intro:
        lines += [intro, ""]
    if rows:
        written += success_plot(rows, out, chance)
        lines += [
            "## Success per task",
            "",
            "Success rate over each task's trials (one layout seed each), ± its standard error over those seeds.",
            "",
            markdown_table(*success_table(rows)),
            f"![success per task]({PLOT_STEM}.png)",
            "",
        ]
    lines += ["## Table", "", headline_markdown.rstrip(), ""]
    if sft:
        evals = [read_sft_eval(spec) for spec in sft]
        lines += [
            "## SFT evaluation: per-task scores",
            "",
            SFT_NOTE,
            "",
            markdown_table(*sft_table(evals)),
        ]
    path = out / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return [path, *written]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)]) + "\n"
