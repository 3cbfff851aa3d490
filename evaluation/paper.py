"""The paper's reported results (VLM4VLA, arXiv 2601.03309, Tables 1-8 and 10) as data, in one place.

Every report that reproduces an experiment prints the paper's number beside its own from here. A value is
keyed like a report column, `SIM:KEY`: `calvin:headline` (average length, 0-5), `calvin:after:K` (success
rate after K subtasks, in percent), `simpler:task:<task>` and `simpler:headline` (success rate, percent), and
`libero:headline`. Rows are keyed by the backbone's Hub id, with `|variant` for a variant of it (Table 3's
`|freeze_vision`, Table 10's `|robopoint` ...); grid tables (Table 4, Table 7) key a cell `row@column`.
Read from the paper's text (`../shared/paper-notes.md` has the same numbers with their sections).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datasets_build.errors import ConfigError

QWEN25_3B = "Qwen/Qwen2.5-VL-3B-Instruct"
QWEN25_7B = "Qwen/Qwen2.5-VL-7B-Instruct"
QWEN3_2B = "Qwen/Qwen3-VL-2B-Instruct"
QWEN3_4B = "Qwen/Qwen3-VL-4B-Instruct"
QWEN3_8B = "Qwen/Qwen3-VL-8B-Instruct"
QWEN3_30B = "Qwen/Qwen3-VL-30B-A3B-Instruct"
PALIGEMMA1 = "google/paligemma-3b-pt-224"
PALIGEMMA2 = "google/paligemma2-3b-pt-224"
KOSMOS2 = "microsoft/kosmos-2-patch14-224"

SIMPLER_TASKS = (  # Table 2's columns Carrot, Eggplant, Spoon, Cube as the SimplerEnv adapter names them
    "widowx_carrot_on_plate",
    "widowx_put_eggplant_in_basket",
    "widowx_spoon_on_towel",
    "widowx_stack_cube",
)


@dataclass(frozen=True)
class PaperTable:
    """One table of the paper: its caption, its rows (key -> label and values) and, for grids, its columns."""

    name: str
    caption: str
    rows: dict[str, dict[str, float]]
    labels: dict[str, str] = field(default_factory=dict)  # row key -> the paper's row label
    columns: tuple[str, ...] = ()  # grid tables: column keys (values keyed "row@column")

    def value(self, row: str, key: str, column: str | None = None) -> float | None:
        """The paper's value of `key` for `row` (and grid `column`), or None where the paper has none."""
        found = self.rows.get(f"{row}@{column}" if column else row)
        return None if found is None else found.get(key)

    def label(self, row: str) -> str:
        """The paper's label of a row."""
        return self.labels.get(row, row)


def _calvin(after: tuple[float, ...], avg_len: float) -> dict[str, float]:
    values = {f"calvin:after:{k}": round(100 * v, 1) for k, v in enumerate(after, 1)}
    return {**values, "calvin:headline": avg_len}


def _simpler(tasks: tuple[float, ...], avg: float, libero: float | None = None) -> dict[str, float]:
    values = {f"simpler:task:{t}": v for t, v in zip(SIMPLER_TASKS, tasks, strict=True)}
    values["simpler:headline"] = avg
    if libero is not None:
        values["libero:headline"] = libero
    return values


def _both(calvin: float, simpler: float) -> dict[str, float]:
    return {"calvin:headline": calvin, "simpler:headline": simpler}


_LABELS = {
    "openvla": "OpenVLA* (Llama-2)",
    "pi0": "pi0* (Paligemma-1)",
    "thinkact": "ThinkAct (Qwen2.5VL-7B)",
    QWEN25_3B: "Qwen2.5VL-3B",
    QWEN25_7B: "Qwen2.5VL-7B",
    QWEN3_2B: "Qwen3VL-2B",
    QWEN3_4B: "Qwen3VL-4B",
    QWEN3_8B: "Qwen3VL-8B",
    QWEN3_30B: "Qwen3VL-30B-A3B",
    PALIGEMMA1: "Paligemma-1",
    PALIGEMMA2: "Paligemma-2",
    KOSMOS2: "KosMos-2",
}

TABLE1 = PaperTable(
    "table1",
    "Table 1: Results on Calvin ABC-D (success rate after 1..5 subtasks and average length)",
    {
        "openvla": _calvin((0.792, 0.644, 0.499, 0.368, 0.245), 2.548),
        "pi0": _calvin((0.896, 0.785, 0.786, 0.610, 0.532), 3.509),
        QWEN25_3B: _calvin((0.922, 0.842, 0.766, 0.700, 0.626), 3.856),
        QWEN25_7B: _calvin((0.935, 0.864, 0.807, 0.758, 0.693), 4.057),
        QWEN3_2B: _calvin((0.943, 0.882, 0.831, 0.776, 0.710), 4.142),
        QWEN3_4B: _calvin((0.933, 0.857, 0.790, 0.719, 0.644), 3.943),
        QWEN3_8B: _calvin((0.940, 0.868, 0.797, 0.746, 0.684), 4.035),
        QWEN3_30B: _calvin((0.939, 0.877, 0.820, 0.757, 0.682), 4.075),
        PALIGEMMA1: _calvin((0.914, 0.813, 0.692, 0.599, 0.488), 3.506),
        PALIGEMMA2: _calvin((0.901, 0.775, 0.669, 0.575, 0.486), 3.406),
        KOSMOS2: _calvin((0.878, 0.721, 0.591, 0.498, 0.408), 3.096),
    },
    _LABELS,
)

TABLE2 = PaperTable(
    "table2",
    "Table 2: Results on SimplerEnv-Bridge (Carrot, Eggplant, Spoon, Cube, average) and Libero-10",
    {
        "openvla": _simpler((4.2, 0.0, 0.0, 12.5), 4.2, 53.7),
        "pi0": _simpler((62.5, 100.0, 54.2, 25.0), 60.4, 46.0),
        "thinkact": _simpler((37.5, 70.8, 58.3, 8.7), 43.8, 70.9),
        QWEN25_3B: _simpler((20.8, 91.7, 79.2, 0.0), 48.0, 43.0),
        QWEN25_7B: _simpler((12.5, 100.0, 75.0, 0.0), 46.8, 45.0),
        QWEN3_2B: _simpler((20.8, 95.8, 79.2, 0.0), 49.0, 55.8),
        QWEN3_4B: _simpler((54.2, 95.8, 75.0, 0.0), 56.3, 44.4),
        QWEN3_8B: _simpler((58.3, 95.8, 79.2, 0.0), 58.3, 46.2),
        QWEN3_30B: _simpler((29.2, 79.2, 70.8, 0.0), 44.8, 46.8),
        PALIGEMMA1: _simpler((50.0, 91.7, 75.0, 4.2), 55.3, 44.2),
        PALIGEMMA2: _simpler((75.0, 75.0, 79.2, 0.0), 57.3, 46.2),
        KOSMOS2: _simpler((37.5, 100.0, 75.0, 29.2), 60.4, 55.0),
    },
    _LABELS,
)

TABLE3 = PaperTable(
    "table3",
    "Table 3: Influence of freezing the vision encoder and the word embeddings (Calvin ABC-D, SimplerBridge)",
    {
        QWEN25_3B: _both(3.856, 48.00),
        f"{QWEN25_3B}|freeze_vision": _both(2.855, 23.95),
        f"{QWEN25_3B}|freeze_word_embeddings": _both(3.849, 46.88),
        QWEN25_7B: _both(4.057, 46.75),
        f"{QWEN25_7B}|freeze_vision": _both(2.823, 25.50),
        f"{QWEN25_7B}|freeze_word_embeddings": _both(3.874, 48.96),
        PALIGEMMA1: _both(3.506, 55.25),
        f"{PALIGEMMA1}|freeze_vision": _both(0.495, 13.25),
        f"{PALIGEMMA1}|freeze_word_embeddings": _both(3.485, 52.25),
    },
    {**_LABELS, **{f"{k}|freeze_vision": "+ freeze vision encoder" for k in (QWEN25_3B, QWEN25_7B, PALIGEMMA1)}},
)

TABLE4 = PaperTable(
    "table4",
    "Table 4: Injecting action information (FAST tokens on BridgeV2) into Qwen3VL-4B before VLA training "
    "(SimplerBridge)",
    {
        "baseline@vla_freeze_vision": {"simpler:headline": 27.6},
        "fast_tokens_freeze_vision@vla_freeze_vision": {"simpler:headline": 28.0},
        "fast_tokens_unfreeze_vision@vla_freeze_vision": {"simpler:headline": 45.7},
        "baseline@vla_unfreeze_vision": {"simpler:headline": 56.3},
        "fast_tokens_freeze_vision@vla_unfreeze_vision": {"simpler:headline": 56.3},
        "fast_tokens_unfreeze_vision@vla_unfreeze_vision": {"simpler:headline": 59.4},
    },
    {
        "baseline": "Baseline",
        "fast_tokens_freeze_vision": "Freeze Vision FT",
        "fast_tokens_unfreeze_vision": "Unfreeze Vision FT",
        "vla_freeze_vision": "Freeze vision encoder during VLA training",
        "vla_unfreeze_vision": "Unfreeze vision encoder during VLA training",
    },
    ("vla_freeze_vision", "vla_unfreeze_vision"),
)

TABLE5 = PaperTable(
    "table5",
    "Table 5: Performance across learning rates on Calvin ABC-D",
    {
        f"{backbone}@lr{lr}": {"calvin:headline": v}
        for backbone, values in (
            (QWEN25_3B, (3.844, 3.856, 3.832, 3.792)),
            (QWEN25_7B, (4.050, 4.057, 4.027, 3.986)),
            (PALIGEMMA1, (3.506, 3.506, 3.487, 3.492)),
        )
        for lr, v in zip(("1e-05", "2e-05", "5e-05", "0.0001"), values, strict=True)
    },
    _LABELS,
    ("lr1e-05", "lr2e-05", "lr5e-05", "lr0.0001"),
)

TABLE6 = PaperTable(
    "table6",
    "Table 6: Prompt formats (long = Scheme 1, short = Scheme 2)",
    {
        QWEN25_3B: _both(3.856, 48.00),
        f"{QWEN25_3B}|short_prompt": _both(3.844, 46.75),
        QWEN25_7B: _both(4.057, 46.75),
        f"{QWEN25_7B}|short_prompt": _both(3.947, 44.00),
    },
    _LABELS,
)

TABLE7 = PaperTable(
    "table7",
    "Table 7: Image resolution with the vision encoder trained or frozen (Calvin ABC-D)",
    {
        f"{row}@res{res}": {"calvin:headline": v}
        for row, values in (
            (QWEN25_3B, (3.856, 3.832, 3.836)),
            (f"{QWEN25_3B}|freeze_vision", (2.855, 2.749, 2.715)),
            (QWEN25_7B, (4.057, 4.062, 3.998)),
            (f"{QWEN25_7B}|freeze_vision", (2.823, 2.746, 2.693)),
        )
        for res, v in zip((224, 512, 768), values, strict=True)
    },
    _LABELS,
    ("res224", "res512", "res768"),
)

TABLE8 = PaperTable(
    "table8",
    "Table 8: Training from scratch compared to pretrained initialization",
    {
        QWEN25_3B: _both(3.856, 48.00),
        f"{QWEN25_3B}|from_scratch": _both(1.381, 15.75),
        QWEN25_7B: _both(4.057, 46.75),
        f"{QWEN25_7B}|from_scratch": _both(1.769, 18.20),
        PALIGEMMA1: _both(3.506, 55.25),
        f"{PALIGEMMA1}|from_scratch": _both(1.129, 14.50),
    },
    _LABELS,
)

TABLE10 = PaperTable(
    "table10",
    "Table 10: Embodied VQA fine-tuning before VLM4VLA (Calvin ABC-D, best setting of each)",
    {
        QWEN25_3B: _calvin((0.922, 0.842, 0.766, 0.700, 0.626), 3.856),
        f"{QWEN25_3B}|robopoint": _calvin((0.924, 0.829, 0.749, 0.683, 0.598), 3.783),
        f"{QWEN25_3B}|vica": _calvin((0.940, 0.842, 0.758, 0.692, 0.615), 3.847),
        f"{QWEN25_3B}|bridgevqa": _calvin((0.945, 0.843, 0.744, 0.657, 0.577), 3.765),
        f"{QWEN25_3B}|robo2vlm": _calvin((0.925, 0.833, 0.737, 0.668, 0.597), 3.760),
        QWEN25_7B: _calvin((0.935, 0.864, 0.807, 0.758, 0.693), 4.057),
        f"{QWEN25_7B}|robobrain2": _calvin((0.938, 0.849, 0.767, 0.704, 0.629), 3.887),
        f"{QWEN25_7B}|omni_generation": _calvin((0.928, 0.833, 0.760, 0.711, 0.654), 3.876),
        f"{QWEN25_7B}|vqa_mix": _calvin((0.938, 0.856, 0.794, 0.732, 0.658), 3.978),
    },
    {
        **_LABELS,
        **{
            f"{backbone}|{corpus}": f"+ {label}"
            for backbone, corpus, label in (
                (QWEN25_3B, "robopoint", "Robopoint"),
                (QWEN25_3B, "vica", "Vica332k"),
                (QWEN25_3B, "bridgevqa", "Bridgevqa"),
                (QWEN25_3B, "robo2vlm", "Robo2vlm"),
                (QWEN25_7B, "robobrain2", "Robobrain2"),
                (QWEN25_7B, "omni_generation", "Omni-Generation"),
                (QWEN25_7B, "vqa_mix", "VQA-Mix"),
            )
        },
    },
)

# Correlation of general VLM capability with VLA score (A.4, Figure 3).
FIGURE3_FITS: dict[str, dict[str, float]] = {
    "calvin": {"r": 0.839, "r2": 0.703},
    "simpler": {"r": -0.358, "r2": 0.128},
    "libero": {"r": -0.194, "r2": 0.038},
}

TABLES: dict[str, PaperTable] = {
    t.name: t for t in (TABLE1, TABLE2, TABLE3, TABLE4, TABLE5, TABLE6, TABLE7, TABLE8, TABLE10)
}


def paper_table(name: str) -> PaperTable:
    """The paper table called `name` (one-line ConfigError naming the known ones)."""
    if name not in TABLES:
        raise ConfigError(f"paper: unknown table {name!r}; known: {', '.join(TABLES)}")
    return TABLES[name]


def as_dict() -> dict[str, Any]:
    """Every table as plain data (for `python -m evaluation paper` and tests)."""
    return {
        name: {"caption": t.caption, "columns": list(t.columns), "rows": t.rows, "labels": t.labels}
        for name, t in TABLES.items()
    }
