"""The bad-input catalogue: malformed sources, shards, cards, recipes, checkpoints, tokenizer folders, CLI
arguments and evaluation outputs, each run through the real command in-process.

Every case builds its bad input in a fresh folder (the working folder while it runs), runs one command
(`python -m datasets_build|evaluation|sft|vla`, or the recipe runner) and expects: its exit code, exactly one
line on stderr naming the file or field (`expect`), no output under a final name (`absent`), no temporary or
partial files left, and every file it did not write still there (`kept`).

`python -m tests.reliability.bad_inputs --write-readme` regenerates the README table from this catalogue;
tests/reliability/test_bad_inputs.py runs every case and checks that the table is in sync.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets_build.errors import EXIT_BAD_INPUT, EXIT_CODES

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- bad-inputs:begin -->", "<!-- bad-inputs:end -->"
LEFTOVER = re.compile(r"(\.tmp$|\.partial$|^\.tmp-)")  # names of unfinished artefacts


# ------------------------------------------------------------------------------------------------ fixtures
class Kit:
    """Pristine inputs built once (the demo's LeRobot episodes, a corpus, a FAST tokenizer, episode files in
    other formats), copied into each case's folder by name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[str, Path] = {}

    def _make(self, name: str, build: Callable[[Path], None]) -> Path:
        if name not in self._built:
            path = self.root / name
            if not path.exists():
                build(path)
            self._built[name] = path
        return self._built[name]

    def copy(self, name: str, dest: Path) -> Path:
        """A fresh copy of fixture `name` at `dest`."""
        source = getattr(self, f"_{name}")()
        shutil.copytree(source, dest, symlinks=True)
        return dest

    def _episodes(self) -> Path:
        from datasets_build.demo_episodes import DemoEpisodesConfig, record_demo_episodes

        def build(path: Path) -> None:
            cfg = DemoEpisodesConfig(out=str(path), episodes=2, seed=0, tasks=["pick_block"], image_size=96)
            record_demo_episodes(cfg)

        return self._make("episodes", build)

    def _corpus(self) -> Path:
        from datasets_build.corpora.build import BuildConfig, build_corpus

        episodes = self._episodes()

        def build(path: Path) -> None:
            build_corpus(BuildConfig(name="robo2vlm", source="demo", input=str(episodes), out=str(path)))

        return self._make("corpus", build)

    def _fast(self) -> Path:
        from datasets_build.fast.fit import FitFastConfig, fit_fast

        episodes = self._episodes()

        def build(path: Path) -> None:
            fit_fast(FitFastConfig(source="demo", input=str(episodes), out=str(path), horizon=4))

        return self._make("fast", build)

    def _written(self, fmt: str) -> Path:
        from datasets_build.fixture_data import write_episodes
        from datasets_build.sources import open_source

        episodes = self._episodes()

        def build(path: Path) -> None:
            path.mkdir(parents=True)
            write_episodes(list(open_source("demo", episodes).episodes()), fmt, path)

        return self._make(fmt, build)

    def _calvin(self) -> Path:
        return self._written("calvin")

    def _rlds(self) -> Path:
        return self._written("rlds")

    def _libero(self) -> Path:
        return self._written("libero")


# -------------------------------------------------------------------------------------------------- cases
Setup = Callable[[Kit, Path], list[str]]


@dataclass(frozen=True)
class Case:
    """One malformed input: `setup(kit, folder)` builds it and returns the command line (program first)."""

    name: str
    area: str
    what: str
    setup: Setup
    expect: str  # the file or field the one-line message must name
    code: int = EXIT_BAD_INPUT
    absent: tuple[str, ...] = ()  # outputs that must not exist afterwards
    kept: tuple[str, ...] = ()  # files the command must leave alone
    hold_lock: str | None = None  # a folder whose output lock another process holds

    @property
    def command(self) -> str:
        """The command the case runs, as the README shows it."""
        return _COMMANDS[self.name]


_COMMANDS: dict[str, str] = {}
CASES: list[Case] = []


def case(name: str, area: str, what: str, command: str, expect: str, **kw: Any) -> Callable[[Setup], Setup]:
    """Register a catalogue case (decorator on its setup)."""

    def wrap(setup: Setup) -> Setup:
        if name in _COMMANDS:
            raise ValueError(f"duplicate case {name}")
        programs = ("evaluation ", "sft ", "vla ", "run.sh ")
        _COMMANDS[name] = command if command.startswith(programs) else f"datasets_build {command}"
        CASES.append(Case(name, area, what, setup, expect, **kw))
        return setup

    return wrap


def flip_byte(path: Path, offset: int = 600) -> None:
    """Invert one byte of `path` (size unchanged)."""
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut `path` to `keep` of its size."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def first(folder: Path, pattern: str) -> Path:
    """The first file under `folder` matching `pattern` (sorted)."""
    found = sorted(folder.rglob(pattern))
    if not found:
        raise FileNotFoundError(f"{folder}/{pattern}")
    return found[0]


def _info(kit: Kit, d: Path, text: str) -> list[str]:
    ds = kit.copy("episodes", d / "ds")
    (ds / "meta/info.json").write_text(text)
    return ["datasets_build", "inspect", "demo", "ds"]


def _rewrite_parquet(path: Path, change: Callable[[Any], Any]) -> None:
    import pyarrow.parquet as pq

    pq.write_table(change(pq.read_table(path)), path)


# -- sources ------------------------------------------------------------------------------------------
@case("lerobot-info-not-object", "sources", "`meta/info.json` holds `[1,2,3]`", "inspect demo ds", "meta/info.json")
def _(kit: Kit, d: Path) -> list[str]:
    return _info(kit, d, "[1, 2, 3]")


@case("lerobot-info-invalid-json", "sources", "`meta/info.json` is not JSON", "inspect demo ds", "meta/info.json")
def _(kit: Kit, d: Path) -> list[str]:
    return _info(kit, d, '{"codebase_version": ')


@case("lerobot-info-zero-byte", "sources", "`meta/info.json` is a zero-byte file", "inspect demo ds", "meta/info.json")
def _(kit: Kit, d: Path) -> list[str]:
    return _info(kit, d, "")


@case("lerobot-info-version", "sources", "unknown `codebase_version`", "inspect demo ds", "codebase_version")
def _(kit: Kit, d: Path) -> list[str]:
    ds = kit.copy("episodes", d / "ds")
    info = json.loads((ds / "meta/info.json").read_text())
    (ds / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v9.9"}))
    return ["datasets_build", "inspect", "demo", "ds"]


@case("lerobot-info-fps", "sources", '`fps` is `"fast"`', "inspect demo ds", "fps")
def _(kit: Kit, d: Path) -> list[str]:
    ds = kit.copy("episodes", d / "ds")
    info = json.loads((ds / "meta/info.json").read_text())
    (ds / "meta/info.json").write_text(json.dumps({**info, "fps": "fast"}))
    return ["datasets_build", "inspect", "demo", "ds"]


@case(
    "lerobot-episodes-corrupt",
    "sources",
    "`meta/episodes/*.parquet` is not parquet",
    "inspect demo ds",
    "file-000.parquet",
)
def _(kit: Kit, d: Path) -> list[str]:
    ds = kit.copy("episodes", d / "ds")
    first(ds / "meta/episodes", "*.parquet").write_bytes(b"PAR1 not really parquet")
    return ["datasets_build", "inspect", "demo", "ds"]


@case("lerobot-tasks-corrupt", "sources", "`meta/tasks.parquet` truncated", "inspect demo ds", "tasks.parquet")
def _(kit: Kit, d: Path) -> list[str]:
    ds = kit.copy("episodes", d / "ds")
    truncate(ds / "meta/tasks.parquet")
    return ["datasets_build", "inspect", "demo", "ds"]


@case("lerobot-tasks-missing", "sources", "`meta/tasks.parquet` missing", "inspect demo ds", "tasks.parquet")
def _(kit: Kit, d: Path) -> list[str]:
    ds = kit.copy("episodes", d / "ds")
    (ds / "meta/tasks.parquet").unlink()
    return ["datasets_build", "inspect", "demo", "ds"]


@case(
    "lerobot-task-binary",
    "sources",
    "a task stored as bytes that are not UTF-8 (`\\xff\\xfe`)",
    "build robo2vlm --source demo",
    "task",
    absent=("out",),
)
def _(kit: Kit, d: Path) -> list[str]:
    import pyarrow as pa

    ds = kit.copy("episodes", d / "ds")

    def to_bytes(table: Any) -> Any:
        index = "__index_level_0__" if "__index_level_0__" in table.column_names else "task"
        values = [b"\xff\xfe" + str(v).encode() for v in table.column(index).to_pylist()]
        return table.set_column(table.column_names.index(index), index, pa.array(values, pa.binary()))

    _rewrite_parquet(ds / "meta/tasks.parquet", to_bytes)
    return ["datasets_build", "build", "robo2vlm", "--source", "demo", "--input", "ds", "--out", "out"]


@case(
    "lerobot-data-truncated",
    "sources",
    "a data parquet file cut in half",
    "stats demo ds --out stats.json",
    "file-000.parquet",
    absent=("stats.json",),
)
def _(kit: Kit, d: Path) -> list[str]:
    ds = kit.copy("episodes", d / "ds")
    truncate(first(ds / "data", "*.parquet"))
    return ["datasets_build", "stats", "demo", "ds", "--out", "stats.json"]


@case(
    "nan-actions",
    "sources",
    "NaN in an episode's actions",
    "build robo2vlm --source demo",
    "actions",
    absent=("out",),
)
def _(kit: Kit, d: Path) -> list[str]:
    import pyarrow as pa

    ds = kit.copy("episodes", d / "ds")

    def nan_action(table: Any) -> Any:
        rows = table.column("action").to_pylist()
        rows[3] = [float("nan")] * len(rows[3])
        i = table.column_names.index("action")
        return table.set_column(i, table.schema.field(i), pa.array(rows, table.schema.field(i).type))

    _rewrite_parquet(first(ds / "data", "*.parquet"), nan_action)
    return ["datasets_build", "build", "robo2vlm", "--source", "demo", "--input", "ds", "--out", "out"]


def _replace_image(kit: Kit, d: Path, image: Any) -> list[str]:
    import pyarrow as pa

    ds = kit.copy("episodes", d / "ds")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")

    def swap(table: Any) -> Any:
        i = table.column_names.index("observation.images.static")
        cells = table.column(i).to_pylist()
        cells[2] = {**cells[2], "bytes": buffer.getvalue()}
        return table.set_column(i, table.schema.field(i), pa.array(cells, table.schema.field(i).type))

    _rewrite_parquet(first(ds / "data", "*.parquet"), swap)
    return ["datasets_build", "build", "robo2vlm", "--source", "demo", "--input", "ds", "--out", "out"]


@case(
    "image-wrong-size",
    "sources",
    "one frame of a camera is 17x13 pixels, the others not",
    "build robo2vlm --source demo",
    "observation.images.static",
    absent=("out",),
)
def _(kit: Kit, d: Path) -> list[str]:
    from PIL import Image

    return _replace_image(kit, d, Image.new("RGB", (17, 13)))


@case(
    "image-wrong-mode",
    "sources",
    "one RGB frame stored as a 16-bit grey PNG",
    "build robo2vlm --source demo",
    "observation.images.static",
    absent=("out",),
)
def _(kit: Kit, d: Path) -> list[str]:
    from PIL import Image

    ds_info = json.loads((kit.copy("episodes", d / "probe") / "meta/info.json").read_text())
    shutil.rmtree(d / "probe")
    height, width = ds_info["features"]["observation.images.static"]["shape"][:2]
    return _replace_image(kit, d, Image.new("I;16", (width, height)))


@case("symlink-loop", "sources", "the dataset path is a symlink loop", "inspect demo loop", "loop")
def _(kit: Kit, d: Path) -> list[str]:
    os.symlink("loop", d / "loop")
    return ["datasets_build", "inspect", "demo", "loop"]


@case("source-missing", "sources", "the dataset folder does not exist", "inspect demo nowhere", "nowhere")
def _(kit: Kit, d: Path) -> list[str]:
    return ["datasets_build", "inspect", "demo", "nowhere"]


@case("calvin-npz-truncated", "sources", "a CALVIN `episode_*.npz` cut in half", "inspect calvin ds", ".npz")
def _(kit: Kit, d: Path) -> list[str]:
    ds = kit.copy("calvin", d / "ds")
    truncate(first(ds, "episode_*.npz"))
    return ["datasets_build", "inspect", "calvin", "ds"]


@case("rlds-tfrecord-truncated", "sources", "an RLDS tfrecord cut in half", "inspect rlds ds", "tfrecord")
def _(kit: Kit, d: Path) -> list[str]:
    ds = kit.copy("rlds", d / "ds")
    truncate(first(ds, "*.tfrecord*"))
    return ["datasets_build", "inspect", "rlds", "ds"]


@case("libero-hdf5-truncated", "sources", "a LIBERO hdf5 file cut in half", "inspect libero ds", ".hdf5")
def _(kit: Kit, d: Path) -> list[str]:
    ds = kit.copy("libero", d / "ds")
    truncate(first(ds, "*.hdf5"))
    return ["datasets_build", "inspect", "libero", "ds"]


@case(
    "skip-bad-nothing-left",
    "sources",
    "`--skip-bad` when every episode is bad",
    "build robo2vlm --source demo --skip-bad",
    "skipped",
    absent=("out",),
)
def _(kit: Kit, d: Path) -> list[str]:
    ds = kit.copy("episodes", d / "ds")
    for path in (ds / "data").rglob("*.parquet"):
        truncate(path)
    argv = ["datasets_build", "build", "robo2vlm", "--source", "demo", "--input", "ds", "--out", "out"]
    return [*argv, "--skip-bad"]


@case(
    "inspect-skip-bad-nothing-left",
    "sources",
    "`inspect --skip-bad` when every episode is bad",
    "inspect demo ds --skip-bad",
    "skipped",
)
def _(kit: Kit, d: Path) -> list[str]:
    ds = kit.copy("episodes", d / "ds")
    for path in (ds / "data").rglob("*.parquet"):
        truncate(path)
    return ["datasets_build", "inspect", "demo", "ds", "--skip-bad"]


# -- shards and cards ---------------------------------------------------------------------------------
def _shard(corpus: Path) -> Path:
    return first(corpus, "*.tar")


@case("shard-byte-flipped", "shards", "one byte of a shard flipped (size unchanged)", "verify corpus", "sha256")
def _(kit: Kit, d: Path) -> list[str]:
    flip_byte(_shard(kit.copy("corpus", d / "corpus")))
    return ["datasets_build", "verify", "corpus"]


@case(
    "mix-corrupt-input",
    "shards",
    "a mix input with a flipped byte",
    "mix --input corpus --out mixed",
    "sha256",
    absent=("mixed",),
)
def _(kit: Kit, d: Path) -> list[str]:
    flip_byte(_shard(kit.copy("corpus", d / "corpus")))
    return ["datasets_build", "mix", "--input", "corpus", "--out", "mixed", "--total", "4"]


@case("shard-truncated", "shards", "a shard cut in half", "verify corpus", "bytes")
def _(kit: Kit, d: Path) -> list[str]:
    truncate(_shard(kit.copy("corpus", d / "corpus")))
    return ["datasets_build", "verify", "corpus"]


@case("shard-zero-byte", "shards", "a zero-byte shard", "verify corpus", "bytes")
def _(kit: Kit, d: Path) -> list[str]:
    _shard(kit.copy("corpus", d / "corpus")).write_bytes(b"")
    return ["datasets_build", "verify", "corpus"]


@case("shard-missing", "shards", "a shard the card lists is gone", "verify corpus", ".tar")
def _(kit: Kit, d: Path) -> list[str]:
    _shard(kit.copy("corpus", d / "corpus")).unlink()
    return ["datasets_build", "verify", "corpus"]


@case("shard-symlink-loop", "shards", "a shard that is a symlink loop", "verify corpus", ".tar")
def _(kit: Kit, d: Path) -> list[str]:
    shard = _shard(kit.copy("corpus", d / "corpus"))
    shard.unlink()
    os.symlink(shard.name, shard)
    return ["datasets_build", "verify", "corpus"]


def _rewrite_shard(corpus: Path, members: Callable[[list[tuple[tarfile.TarInfo, bytes]]], list[Any]]) -> None:
    """Rewrite the first shard's members and fix the card's size and sha256, so only the content is bad."""
    import hashlib

    shard = _shard(corpus)
    with tarfile.open(shard) as tar:
        old = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]  # type: ignore[union-attr]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members(old):
            tar.addfile(info, io.BytesIO(data))
    card_path = corpus / "dataset_card.json"
    card = json.loads(card_path.read_text())
    data = shard.read_bytes()
    for entry in card["shards"]:
        if entry["name"] == shard.name:
            entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    card_path.write_text(json.dumps(card, indent=2))


@case(
    "shard-path-traversal",
    "shards",
    "a shard member named `../../evil.json` (card hashes match)",
    "verify corpus",
    "../../evil",
    kept=(),
)
def _(kit: Kit, d: Path) -> list[str]:
    corpus = kit.copy("corpus", d / "corpus")

    def evil(members: list[tuple[tarfile.TarInfo, bytes]]) -> list[Any]:
        data = members[0][1]
        bad = tarfile.TarInfo("../../evil.json")
        bad.size = len(data)
        return [(bad, data), *members[1:]]

    _rewrite_shard(corpus, evil)
    return ["datasets_build", "verify", "corpus"]


@case(
    "shard-member-bad-json",
    "shards",
    "a sample's json member is not JSON (card hashes match)",
    "verify corpus",
    "json",
)
def _(kit: Kit, d: Path) -> list[str]:
    corpus = kit.copy("corpus", d / "corpus")

    def broken(members: list[tuple[tarfile.TarInfo, bytes]]) -> list[Any]:
        out, done = [], False
        for info, content in members:
            if info.name.endswith(".json") and not done:
                info.size, done = 5, True
                out.append((info, b"{oops"))
            else:
                out.append((info, content))
        return out

    _rewrite_shard(corpus, broken)
    return ["datasets_build", "verify", "corpus"]


@case("card-missing", "cards", "the dataset card is gone", "verify corpus", "dataset_card.json")
def _(kit: Kit, d: Path) -> list[str]:
    (kit.copy("corpus", d / "corpus") / "dataset_card.json").unlink()
    return ["datasets_build", "verify", "corpus"]


@case("card-invalid-json", "cards", "the dataset card is not JSON", "verify corpus", "dataset_card.json")
def _(kit: Kit, d: Path) -> list[str]:
    (kit.copy("corpus", d / "corpus") / "dataset_card.json").write_text("{")
    return ["datasets_build", "verify", "corpus"]


@case("card-bad-sha256", "cards", "a card's sha256 is not 64 hex digits", "verify corpus", "sha256")
def _(kit: Kit, d: Path) -> list[str]:
    path = kit.copy("corpus", d / "corpus") / "dataset_card.json"
    card = json.loads(path.read_text())
    card["shards"][0]["sha256"] = "xyz"
    path.write_text(json.dumps(card))
    return ["datasets_build", "verify", "corpus"]


@case("card-not-object", "cards", "the dataset card holds a list", "verify corpus", "dataset_card.json")
def _(kit: Kit, d: Path) -> list[str]:
    (kit.copy("corpus", d / "corpus") / "dataset_card.json").write_text("[]")
    return ["datasets_build", "verify", "corpus"]


# -- tokenizer folders --------------------------------------------------------------------------------
def _fast_tokens(kit: Kit, d: Path) -> list[str]:
    kit.copy("episodes", d / "ds")
    argv = ["datasets_build", "build", "fast_tokens", "--source", "demo", "--input", "ds", "--out", "out"]
    return [*argv, "tokenizer=fast"]


@case(
    "fast-no-tokenizer-json",
    "tokenizers",
    "a FAST tokenizer folder without `tokenizer.json`",
    "build fast_tokens tokenizer=fast",
    "tokenizer.json",
    absent=("out",),
)
def _(kit: Kit, d: Path) -> list[str]:
    (kit.copy("fast", d / "fast") / "tokenizer.json").unlink()
    return _fast_tokens(kit, d)


@case(
    "fast-tokenizer-json-corrupt",
    "tokenizers",
    "`tokenizer.json` truncated",
    "build fast_tokens tokenizer=fast",
    "tokenizer.json",
    absent=("out",),
)
def _(kit: Kit, d: Path) -> list[str]:
    truncate(kit.copy("fast", d / "fast") / "tokenizer.json")
    return _fast_tokens(kit, d)


@case(
    "fast-config-version",
    "tokenizers",
    "`fast_config.json` of another format version",
    "build fast_tokens tokenizer=fast",
    "fast_config.json",
    absent=("out",),
)
def _(kit: Kit, d: Path) -> list[str]:
    path = kit.copy("fast", d / "fast") / "fast_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": 99}))
    return _fast_tokens(kit, d)


@case(
    "fast-folder-missing",
    "tokenizers",
    "the FAST tokenizer folder is an empty folder",
    "build fast_tokens tokenizer=fast",
    "fast_config.json",
    absent=("out",),
)
def _(kit: Kit, d: Path) -> list[str]:
    (d / "fast").mkdir()
    return _fast_tokens(kit, d)


# -- CLI arguments and output folders ------------------------------------------------------------------
@case(
    "inspect-negative-max", "cli", "`inspect --max-episodes -1`", "inspect demo ds --max-episodes -1", "--max-episodes"
)
def _(kit: Kit, d: Path) -> list[str]:
    kit.copy("episodes", d / "ds")
    return ["datasets_build", "inspect", "demo", "ds", "--max-episodes", "-1"]


@case(
    "stats-out-is-folder",
    "cli",
    "`stats --out` names an existing folder",
    "stats demo ds --out taken",
    "taken",
    kept=("taken/keep.txt",),
)
def _(kit: Kit, d: Path) -> list[str]:
    kit.copy("episodes", d / "ds")
    (d / "taken").mkdir()
    (d / "taken/keep.txt").write_text("mine")
    return ["datasets_build", "stats", "demo", "ds", "--out", "taken"]


@case(
    "fit-fast-out-is-file",
    "cli",
    "`fit-fast --out` names an existing file",
    "fit-fast demo ds --out taken",
    "taken",
    kept=("taken",),
)
def _(kit: Kit, d: Path) -> list[str]:
    kit.copy("episodes", d / "ds")
    (d / "taken").write_text("mine")
    return ["datasets_build", "fit-fast", "demo", "ds", "--horizon", "4", "--out", "taken"]


@case(
    "fit-fast-out-not-empty",
    "cli",
    "`fit-fast --out` names a non-empty folder (no `--overwrite`)",
    "fit-fast demo ds --out taken",
    "--overwrite",
    kept=("taken/keep.txt",),
)
def _(kit: Kit, d: Path) -> list[str]:
    kit.copy("episodes", d / "ds")
    (d / "taken").mkdir()
    (d / "taken/keep.txt").write_text("mine")
    return ["datasets_build", "fit-fast", "demo", "ds", "--horizon", "4", "--out", "taken"]


@case(
    "overwrite-foreign-folder",
    "cli",
    "`--overwrite` on a folder no command of this kind wrote",
    "fit-fast demo ds --out taken --overwrite",
    ".vlm4vla-output.json",
    kept=("taken/keep.txt",),
)
def _(kit: Kit, d: Path) -> list[str]:
    kit.copy("episodes", d / "ds")
    (d / "taken").mkdir()
    (d / "taken/keep.txt").write_text("mine")
    return ["datasets_build", "fit-fast", "demo", "ds", "--horizon", "4", "--out", "taken", "--overwrite"]


@case(
    "overwrite-other-kind",
    "cli",
    "`--overwrite` on a folder another command wrote (a shard folder)",
    "fit-fast demo ds --out corpus --overwrite",
    "shards",
    kept=("corpus/dataset_card.json",),
)
def _(kit: Kit, d: Path) -> list[str]:
    kit.copy("episodes", d / "ds")
    kit.copy("corpus", d / "corpus")
    return ["datasets_build", "fit-fast", "demo", "ds", "--horizon", "4", "--out", "corpus", "--overwrite"]


@case(
    "overwrite-working-folder",
    "cli",
    "`--out . --overwrite` (the working folder)",
    "fit-fast demo ds --out . --overwrite",
    "working folder",
    kept=("keep.txt", "ds/meta/info.json"),
)
def _(kit: Kit, d: Path) -> list[str]:
    kit.copy("episodes", d / "ds")
    (d / "keep.txt").write_text("mine")
    from datasets_build.outputs import write_marker

    write_marker(d, "fit-fast")  # even a folder marked as this command's is never deleted when it is the cwd
    return ["datasets_build", "fit-fast", "demo", "ds", "--horizon", "4", "--out", ".", "--overwrite"]


@case(
    "overwrite-parent-folder",
    "cli",
    "`demo-episodes --out .. --overwrite` (a folder above the working folder)",
    "demo-episodes --out .. --overwrite",
    "working folder",
    kept=("keep.txt",),
)
def _(kit: Kit, d: Path) -> list[str]:
    (d / "keep.txt").write_text("mine")
    return ["datasets_build", "demo-episodes", "--out", "..", "--overwrite", "--episodes", "1"]


@case(
    "tiny-models-no-hf-home",
    "cli",
    "`tiny-models` without `--hf-home` (would write random weights into the default cache)",
    "tiny-models --ids Qwen/Qwen2.5-VL-3B-Instruct",
    "--hf-home",
)
def _(kit: Kit, d: Path) -> list[str]:
    return ["datasets_build", "tiny-models", "--ids", "Qwen/Qwen2.5-VL-3B-Instruct"]


@case(
    "build-out-is-file",
    "cli",
    "`build --out` names an existing file",
    "build robo2vlm --source demo --out taken",
    "taken",
    kept=("taken",),
)
def _(kit: Kit, d: Path) -> list[str]:
    kit.copy("episodes", d / "ds")
    (d / "taken").write_text("mine")
    return ["datasets_build", "build", "robo2vlm", "--source", "demo", "--input", "ds", "--out", "taken"]


@case(
    "import-missing-json",
    "cli",
    "`import llava-json` of a file that does not exist",
    "import llava-json missing.json",
    "missing.json",
    absent=("out",),
)
def _(kit: Kit, d: Path) -> list[str]:
    (d / "images").mkdir()
    return ["datasets_build", "import", "llava-json", "missing.json", "--image-root", "images", "--out", "out"]


@case(
    "calvin-sequences-negative",
    "cli",
    "`calvin-sequences --num -1`",
    "evaluation calvin-sequences --num -1",
    "--num",
    absent=("seqs.json",),
)
def _(kit: Kit, d: Path) -> list[str]:
    return ["evaluation", "calvin-sequences", "--num", "-1", "--out", "seqs.json"]


@case(
    "sft-overwrite-working-folder",
    "cli",
    "`sft train output_dir=. overwrite=true`",
    "sft train sft.yaml output_dir=. overwrite=true",
    "working folder",
    kept=("keep.txt", "sft.yaml"),
)
def _(kit: Kit, d: Path) -> list[str]:
    kit.copy("corpus", d / "corpus")
    (d / "keep.txt").write_text("mine")
    (d / "sft.yaml").write_text("model: Qwen/Qwen2.5-VL-3B-Instruct\ndata:\n  - {path: corpus, weight: 1.0}\n")
    return ["sft", "train", "sft.yaml", "output_dir=.", "overwrite=true"]


@case(
    "sft-data-missing",
    "cli",
    "`sft train` on a shard folder that does not exist",
    "sft train sft.yaml",
    "nowhere",
    absent=("run",),
)
def _(kit: Kit, d: Path) -> list[str]:
    text = "model: Qwen/Qwen2.5-VL-3B-Instruct\ndata:\n  - {path: nowhere, weight: 1.0}\noutput_dir: run\n"
    (d / "sft.yaml").write_text(text)
    return ["sft", "train", "sft.yaml"]


# -- recipes ------------------------------------------------------------------------------------------
def _recipe(d: Path, text: str) -> list[str]:
    (d / "r.yaml").write_text(text)
    return ["recipes", str(d / "r.yaml"), "--dry-run"]


@case("recipe-invalid-yaml", "recipes", "a recipe that is not YAML", "run.sh r.yaml --dry-run", "r.yaml")
def _(kit: Kit, d: Path) -> list[str]:
    return _recipe(d, "stages: [unclosed\n")


@case("recipe-unknown-kind", "recipes", "a stage of an unknown kind", "run.sh r.yaml --dry-run", "unknown stage kind")
def _(kit: Kit, d: Path) -> list[str]:
    return _recipe(d, "stages:\n  s:\n    uses: no_such_kind\n")


@case("recipe-unknown-key", "recipes", "a stage with a key its config lacks", "run.sh r.yaml --dry-run", "no_such_key")
def _(kit: Kit, d: Path) -> list[str]:
    return _recipe(d, "stages:\n  verify:\n    path: corpus\n    no_such_key: 1\n")


@case("recipe-overwrite", "recipes", "a stage that sets `overwrite: true`", "run.sh r.yaml --dry-run", "overwrite")
def _(kit: Kit, d: Path) -> list[str]:
    return _recipe(d, "stages:\n  build:\n    name: robo2vlm\n    input: ds\n    out: out\n    overwrite: true\n")


@case(
    "recipe-negative-error-rate",
    "recipes",
    "`verify` with `max_error_rate: -1`",
    "run.sh r.yaml --dry-run",
    "max_error_rate",
)
def _(kit: Kit, d: Path) -> list[str]:
    return _recipe(d, "stages:\n  verify:\n    path: corpus\n    max_error_rate: -1\n")


# -- checkpoints --------------------------------------------------------------------------------------
@case(
    "vla-checkpoint-no-head",
    "checkpoints",
    "a VLA checkpoint without `action_head.safetensors`",
    "evaluation run --policy ckpt --sim demo",
    "action_head.safetensors",
    absent=("res",),
)
def _(kit: Kit, d: Path) -> list[str]:
    from vla.configuration_vla import VLAConfig
    from vla.normalization import ActionNormalizer

    (d / "ckpt").mkdir()
    VLAConfig(backbone="Qwen/Qwen2.5-VL-3B-Instruct").save(d / "ckpt")
    ActionNormalizer.from_stats(None, mode="none").save(d / "ckpt")
    return ["evaluation", "run", "--sim", "demo", "--policy", "ckpt", "--out", "res", "--trials", "1"]


@case(
    "vla-checkpoint-bad-config",
    "checkpoints",
    "a VLA checkpoint whose `vla_config.json` is truncated",
    "evaluation run --policy ckpt --sim demo",
    "vla_config.json",
    absent=("res",),
)
def _(kit: Kit, d: Path) -> list[str]:
    from vla.configuration_vla import VLAConfig

    (d / "ckpt").mkdir()
    truncate(VLAConfig(backbone="Qwen/Qwen2.5-VL-3B-Instruct").save(d / "ckpt"))
    return ["evaluation", "run", "--sim", "demo", "--policy", "ckpt", "--out", "res", "--trials", "1"]


@case(
    "policy-missing",
    "checkpoints",
    "`--policy` names a folder that does not exist",
    "evaluation run --policy nowhere --sim demo",
    "nowhere",
    absent=("res",),
)
def _(kit: Kit, d: Path) -> list[str]:
    return ["evaluation", "run", "--sim", "demo", "--policy", "nowhere/ckpt", "--out", "res", "--trials", "1"]


# -- evaluation outputs -------------------------------------------------------------------------------
def summary(sim: str = "demo", rate: float = 0.5) -> dict[str, Any]:
    """A minimal finished evaluation summary."""
    metrics = {"episodes": 2, "success_rate": rate, "per_task": {"pick_block": {"episodes": 2, "success_rate": rate}}}
    return {"sim": sim, "metric": "success", "metrics": metrics, "complete": True, "num_shards": 1, "trials": 2}


def _results(d: Path, name: str = "a") -> str:
    (d / name).mkdir()
    (d / name / "summary.json").write_text(json.dumps(summary()))
    return name


@case(
    "eval-out-is-file",
    "evaluation",
    "`evaluation run --out` names an existing file",
    "evaluation run --policy zero --out taken",
    "taken",
    kept=("taken",),
)
def _(kit: Kit, d: Path) -> list[str]:
    (d / "taken").write_text("mine")
    return ["evaluation", "run", "--sim", "demo", "--policy", "zero", "--out", "taken", "--trials", "1"]


@case(
    "eval-out-locked",
    "evaluation",
    "a second `evaluation run` on an `--out` another run holds",
    "evaluation run --policy zero --out res",
    "locked",
    hold_lock="res",
)
def _(kit: Kit, d: Path) -> list[str]:
    return ["evaluation", "run", "--sim", "demo", "--policy", "zero", "--out", "res", "--trials", "1"]


@case(
    "eval-out-other-sim",
    "evaluation",
    "`--out` holds another simulator's results",
    "evaluation run --sim demo --out res",
    "res",
    kept=("res/run.json",),
)
def _(kit: Kit, d: Path) -> list[str]:
    (d / "res").mkdir()
    (d / "res/run.json").write_text(json.dumps({"sim": "libero", "trials": 1}))
    return ["evaluation", "run", "--sim", "demo", "--policy", "zero", "--out", "res", "--trials", "1"]


@case(
    "report-capability-not-number",
    "evaluation",
    "a `--capability` CSV score that is not a number",
    "evaluation report a --capability cap.csv --out rep",
    "score",
    absent=("rep",),
)
def _(kit: Kit, d: Path) -> list[str]:
    (d / "cap.csv").write_text("model,score\na,high\n")
    return ["evaluation", "report", _results(d), "--capability", "cap.csv", "--out", "rep"]


@case(
    "report-out-not-empty",
    "evaluation",
    "`report --out` names a folder of other files",
    "evaluation report a --out taken",
    ".vlm4vla-output.json",
    kept=("taken/keep.txt",),
)
def _(kit: Kit, d: Path) -> list[str]:
    (d / "taken").mkdir()
    (d / "taken/keep.txt").write_text("mine")
    return ["evaluation", "report", _results(d), "--out", "taken"]


@case(
    "report-no-summary",
    "evaluation",
    "a results folder without `summary.json`",
    "evaluation report empty --out rep",
    "summary.json",
    absent=("rep",),
)
def _(kit: Kit, d: Path) -> list[str]:
    (d / "empty").mkdir()
    return ["evaluation", "report", "empty", "--out", "rep"]


@case(
    "report-summary-not-summary",
    "evaluation",
    "`summary.json` holding a list",
    "evaluation report a --out rep",
    "summary.json",
    absent=("rep",),
)
def _(kit: Kit, d: Path) -> list[str]:
    (d / "a").mkdir()
    (d / "a/summary.json").write_text("[1, 2]")
    return ["evaluation", "report", "a", "--out", "rep"]


@case(
    "merge-not-a-shard",
    "evaluation",
    "`evaluation merge` of a folder that is no results shard",
    "evaluation merge x y --out merged",
    "x",
    absent=("merged",),
)
def _(kit: Kit, d: Path) -> list[str]:
    for name in ("x", "y"):
        (d / name).mkdir()
    return ["evaluation", "merge", "x", "y", "--out", "merged"]


# ------------------------------------------------------------------------------------------------ running
@dataclass
class Outcome:
    """What one case's command did."""

    code: int
    stderr: str
    leftovers: list[str] = field(default_factory=list)


def _mains() -> dict[str, Callable[[list[str]], int]]:
    """Every program's entry point, imported up front (a case changes the working folder)."""
    from datasets_build.cli import main as data_main
    from evaluation.cli import main as eval_main
    from recipes.runner import main as recipe_main
    from sft.cli import main as sft_main
    from vla.cli import main as vla_main

    return {
        "datasets_build": data_main,
        "evaluation": eval_main,
        "sft": sft_main,
        "vla": vla_main,
        "recipes": recipe_main,
    }


@contextlib.contextmanager
def _held_lock(folder: Path | None) -> Iterator[None]:
    """Hold `folder`'s output lock from another open file, as a second process would."""
    if folder is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a+") as handle:
        handle.write(json.dumps({"pid": 1, "host": "elsewhere", "what": "evaluation run"}))
        handle.flush()
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


def _snapshot(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")} if folder.exists() else set()


def run_case(item: Case, kit: Kit, folder: Path) -> Outcome:
    """Build the case's input in `folder` and run its command there, in this process."""
    folder.mkdir(parents=True, exist_ok=True)
    mains = _mains()
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        argv = item.setup(kit, folder)
        before = _snapshot(folder)
        err, out = io.StringIO(), io.StringIO()
        lock = folder / item.hold_lock if item.hold_lock else None
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), _held_lock(lock):
            try:
                code = mains[argv[0]](argv[1:])
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 1
        created = _snapshot(folder) - before
    finally:
        os.chdir(cwd)
    leftovers = sorted(p for p in created if LEFTOVER.search(Path(p).name))
    return Outcome(int(code), err.getvalue(), leftovers)


def problems(item: Case, outcome: Outcome, folder: Path) -> list[str]:
    """What the case's command did wrong (empty: it behaved)."""
    found = []
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if outcome.code != item.code:
        found.append(f"exit {outcome.code}, expected {item.code}")
    if len(errors) != 1:
        found.append(f"{len(errors)} error lines, expected 1: {lines[-3:]}")
    elif item.expect not in errors[0]:
        found.append(f"the message does not name {item.expect!r}: {errors[0]}")
    if any(line.startswith("Traceback") for line in lines):
        found.append("a traceback was printed")
    found += [f"partial output left: {p}" for p in outcome.leftovers]
    found += [f"output written: {p}" for p in item.absent if (folder / p).exists()]
    found += [f"deleted a file it did not write: {p}" for p in item.kept if not (folder / p).exists()]
    return found


# ------------------------------------------------------------------------------------------------ README
def readme_table() -> str:
    """The README's table of exit codes and of every catalogue case (generated; do not edit by hand)."""
    lines = [BEGIN, "", "| Exit code | Meaning |", "| --- | --- |"]
    lines += [f"| {code} | {meaning} |" for code, meaning in EXIT_CODES.items()]
    lines += ["", f"{len(CASES)} bad inputs, each run by `tests/reliability/test_bad_inputs.py`:", ""]
    lines += [
        "| # | Area | Bad input | Command | Exit | The one-line error names |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for number, item in enumerate(CASES, 1):
        cells = [str(number), item.area, item.what, f"`{item.command}`", str(item.code), f"`{item.expect}`"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", END]
    return "\n".join(lines)


def readme_with_table(text: str) -> str:
    """`text` (the README) with the generated table between its markers."""
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + readme_table() + text[end:]


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.reliability.bad_inputs --write-readme`: regenerate the README's table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-readme", action="store_true", help="rewrite the table in README.md")
    args = parser.parse_args(argv)
    if args.write_readme:
        README.write_text(readme_with_table(README.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"{README}: {len(CASES)} cases")
    else:
        print(readme_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
