"""Fuzz targets for every reader and parser: hypothesis strategies of malformed inputs and the code that reads them.

Each `Target` pairs a strategy (byte mutations of a real file written by the toolkit's own writers, plus inputs
built from the format's structure) with a `run` that feeds one case through the public reading path. The rule
checked by `fuzz` is the toolkit's error contract: a case may read fine or raise a `ToolkitError` (one line
naming the file and field); any other exception is an escape. `benchmarks/fuzz_all.py` runs >= 10k cases per
target, `tests/reliability/test_fuzz.py` a short version.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
import tarfile
import tempfile
import traceback
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from datasets_build.errors import ToolkitError

PROJECT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------ generic mutations

_OPS = ("flip", "set", "truncate", "insert", "delete", "duplicate")
_mutation = st.tuples(st.sampled_from(_OPS), st.integers(0, 2**31), st.integers(0, 255), st.binary(max_size=24))


def apply_mutations(blob: bytes, ops: list[tuple[str, int, int, bytes]]) -> bytes:
    """`blob` with byte-level edits applied in order (positions wrap around the current length)."""
    data = bytearray(blob)
    for kind, pos, value, extra in ops:
        size = len(data)
        at = pos % (size + 1)
        if kind == "flip" and size:
            data[at % size] ^= 1 << (value % 8)
        elif kind == "set" and size:
            data[at % size] = value
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = extra
        elif kind == "delete":
            del data[at : at + 1 + value]
        elif kind == "duplicate":
            data[at:at] = data[at : at + 1 + value]
    return bytes(data)


def mutated(blob: bytes, max_ops: int = 4) -> st.SearchStrategy[bytes]:
    """Byte mutations of a valid `blob` (bit flips, overwrites, truncation, insertion, deletion, duplication)."""
    return st.lists(_mutation, min_size=1, max_size=max_ops).map(lambda ops: apply_mutations(blob, ops))


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def edit_document(doc: Any, path: list[int], action: str, value: Any) -> Any:
    """A copy of a JSON/YAML document with the node reached by `path` (child indices, wrapped) replaced or
    deleted, or `value` added under a new key."""
    doc = copy.deepcopy(doc)
    if not isinstance(doc, dict | list) or not doc:
        return value
    parent: Any = doc
    for step in path:
        keys = sorted(parent, key=str) if isinstance(parent, dict) else list(range(len(parent)))
        if not keys:
            break
        key = keys[step % len(keys)]
        child = parent[key]
        if isinstance(child, dict | list) and child and step % 3:
            parent = child
            continue
        if action == "delete":
            del parent[key]
        elif action == "add" and isinstance(parent, dict):
            parent[f"extra{step}"] = value
        else:
            parent[key] = value
        return doc
    return doc


def document_edits(doc: Any, values: st.SearchStrategy[Any] = json_values) -> st.SearchStrategy[Any]:
    """One to three structural edits of `doc` (replace a value, delete a key or item, add a key)."""
    edit = st.tuples(
        st.lists(st.integers(0, 1000), min_size=1, max_size=6), st.sampled_from(["replace", "delete", "add"]), values
    )

    def apply(edits: list[tuple[list[int], str, Any]]) -> Any:
        out = doc
        for path, action, value in edits:
            out = edit_document(out, path, action, value)
        return out

    return st.lists(edit, min_size=1, max_size=3).map(apply)


def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    """A JSON text nested `depth` levels deep (parsers that recurse per level blow the stack on it)."""
    return opener * depth + closer * depth


# ------------------------------------------------------------------------------------------ the fixtures


@dataclass
class Fixtures:
    """Valid files of every format, written once per process by the toolkit's own writers; cases edit copies."""

    root: Path
    seeds: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    def work(self, name: str) -> Path:
        """A scratch folder for one target (emptied by `restore`)."""
        path = self.root / "work" / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def build_fixtures(root: Path) -> Fixtures:
    """Write a tiny dataset of every source format, a shard folder with its card and a FAST tokenizer."""
    from datasets_build.fast.tokenizer import FastTokenizer
    from datasets_build.fixture_data import FixtureDataConfig, write_fixture_data
    from datasets_build.sample import Sample, assistant_turn, user_turn
    from datasets_build.shards.writer import ShardWriter

    fx = Fixtures(root)
    for fmt in ("calvin", "rlds", "libero", "lerobot"):
        write_fixture_data(FixtureDataConfig(format=fmt, out=str(root / fmt), episodes=1, image_size=16, shards=1))
    from PIL import Image

    image = Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3))
    samples = [
        Sample(
            key=f"s{i}",
            messages=[user_turn("where is the cube?"), assistant_turn("[(0.25, 0.5)]")],
            images=[image],
            task="pointing",
            source="demo",
            meta={"answer_kind": "points", "image_size": [16, 16]},
            target=Image.fromarray(np.zeros((16, 16), dtype=np.uint8)) if i == 0 else None,
        )
        for i in range(2)
    ]
    with ShardWriter(root / "shards", "fuzz", max_samples_per_shard=2) as writer:
        for sample in samples:
            writer.write(sample)
    rng = np.random.default_rng(0)
    chunks = np.cumsum(rng.normal(size=(64, 4, 2)), axis=1)
    stats = {"q01": [-3.0, -3.0], "q99": [3.0, 3.0]}
    FastTokenizer.fit(chunks, stats, vocab_size=64, scale=4.0).save_pretrained(root / "fast")
    fx.seeds["fast_chunks"] = chunks
    return fx


@contextmanager
def fixtures_in(parent: str | None = None) -> Iterator[Fixtures]:
    """Fixtures in a temporary folder (RAM-backed /dev/shm when present), removed afterwards."""
    base = parent or (str(Path("/dev/shm")) if Path("/dev/shm").is_dir() else None)
    with tempfile.TemporaryDirectory(prefix="fuzz-", dir=base) as tmp:
        yield build_fixtures(Path(tmp))


@contextmanager
def replaced(path: Path, data: bytes) -> Iterator[Path]:
    """`path` holding `data` for the duration, its original bytes put back afterwards."""
    original = path.read_bytes()
    path.write_bytes(data)
    try:
        yield path
    finally:
        path.write_bytes(original)


# ------------------------------------------------------------------------------------------------ npz


_NPZ_KEYS = ("rgb_static", "rgb_gripper", "rel_actions", "robot_obs", "scene_obs", "depth_static", "depth_gripper")
_DTYPES = ("uint8", "float32", "float64", "int64", "bool", "<U3", "S2", "complex64", "float16", ">f4")


@st.composite
def _array(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
    size = int(np.prod(shape)) if shape else 1
    raw = draw(st.binary(min_size=size * dtype.itemsize, max_size=size * dtype.itemsize))
    return np.frombuffer(raw, dtype=dtype).reshape(shape) if size else np.zeros(shape, dtype)


@st.composite
def _npz_bytes(draw: st.DrawFn) -> bytes:
    arrays = draw(st.dictionaries(st.sampled_from(_NPZ_KEYS), _array(), max_size=len(_NPZ_KEYS)))
    if draw(st.booleans()):
        arrays[draw(st.sampled_from(_NPZ_KEYS))] = np.array([{"a": 1}, None], dtype=object)  # a pickled member
    buf = io.BytesIO()
    (np.savez_compressed if draw(st.booleans()) else np.savez)(buf, **arrays)  # type: ignore[operator]
    return buf.getvalue()


def _calvin_frame(fx: Fixtures) -> Path:
    return fx.root / "calvin" / "training" / "episode_0000003.npz"


def _rezipped(blob: bytes) -> st.SearchStrategy[bytes]:
    """The npz archive `blob` with one member's .npy bytes mutated and the archive rewritten (valid CRCs)."""
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}

    def rebuild(choice: tuple[str, list[tuple[str, int, int, bytes]]]) -> bytes:
        name, ops = choice
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            for member, data in members.items():
                archive.writestr(member, apply_mutations(data, ops) if member == name else data)
        return buf.getvalue()

    return st.tuples(st.sampled_from(sorted(members)), st.lists(_mutation, min_size=1, max_size=4)).map(rebuild)


def npz_strategy(fx: Fixtures) -> st.SearchStrategy[bytes]:
    """A CALVIN frame file: byte mutations of a real one or of one of its members, or npz of random members."""
    blob = _calvin_frame(fx).read_bytes()
    return st.one_of(mutated(blob), _rezipped(blob), _rezipped(blob), _npz_bytes())


def npz_run(fx: Fixtures, case: bytes) -> None:
    """Read the episode holding the mutated frame (full load and the image-free summary)."""
    from datasets_build.sources import open_source

    with replaced(_calvin_frame(fx), case):
        source = open_source("calvin", fx.root / "calvin")
        for key in source.episode_keys():
            source.load_episode(key)
            source.summarize_episode(key)
            source.read_image(key, "static", 3)


# ------------------------------------------------------------------------------------- npy and pickles

_pickled_objects = st.recursive(
    _SCALARS | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_EVIL = (
    b"cos\nsystem\n(S'echo pwned'\ntR.",
    b"cbuiltins\neval\n(S'1+1'\ntR.",
    b"c__builtin__\ngetattr\n(cbuiltins\nobject\nS'__class__'\ntR.",
    b"cnumpy\nload\n(S'/etc/passwd'\ntR.",
    b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93.",
    b"(P0\ntR.",
    b"cbuiltins\nbytes\n(I10000000000\ntR.",  # allocation bombs: a few bytes asking for gigabytes
    b"cbuiltins\nlist\n(cbuiltins\nrange\n(I10000000000\ntRtR.",
    b"cnumpy._core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I10000000000\ntcnumpy\ndtype\n(S'O8'\nI0\nI1\ntRtR.",
    b"cnumpy\nndarray\n((I10000000000\ntS'O'\ntR.",
    b"c_codecs\nencode\n(S'abc'\nS'zlib_codec'\ntR.",
)


@st.composite
def _npy_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["object", "array", "evil", "raw"]))
    buf = io.BytesIO()
    if kind == "object":
        obj = draw(_pickled_objects)
        array = np.empty((), dtype=object)
        array[()] = obj
        np.lib.format.write_array(buf, array, allow_pickle=True)
        return buf.getvalue()
    if kind == "array":
        np.lib.format.write_array(buf, draw(_array()), allow_pickle=False)
        return buf.getvalue()
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": ()})
    body = draw(st.sampled_from(_EVIL)) if kind == "evil" else draw(st.binary(max_size=64))
    return header.getvalue() + body


_CALVIN_NPY = ("scene_info.npy", "ep_start_end_ids.npy", "lang_annotations/auto_lang_ann.npy")


def npy_strategy(fx: Fixtures) -> st.SearchStrategy[tuple[str, bytes]]:
    """CALVIN's pickled `.npy` files: mutations of real ones, random objects, forbidden globals, junk."""
    training = fx.root / "calvin" / "training"
    mutations = [mutated((training / n).read_bytes()).map(lambda b, n=n: (n, b)) for n in _CALVIN_NPY]
    return st.one_of(*mutations, st.tuples(st.sampled_from(_CALVIN_NPY), _npy_bytes()))


def npy_run(fx: Fixtures, case: tuple[str, bytes]) -> None:
    """Load the file through the restricted unpickler, then open CALVIN with it in place of the real one."""
    from datasets_build.safe_pickle import load_npy_object
    from datasets_build.sources import open_source

    name, data = case
    path = fx.work("npy") / "case.npy"
    path.write_bytes(data)
    try:
        load_npy_object(path)
    finally:
        with replaced(fx.root / "calvin" / "training" / name, data):
            source = open_source("calvin", fx.root / "calvin")
            for key in source.episode_keys():
                source.episode_layout(key)


# --------------------------------------------------------------------------------------------- tfrecord


def _tfrecord_file(fx: Fixtures) -> Path:
    return next((fx.root / "rlds").glob("*.tfrecord-*"))


@st.composite
def _framed(draw: st.DrawFn) -> bytes:
    from datasets_build.sources.tfrecord import masked_crc32c

    out = b""
    for payload in draw(st.lists(st.binary(max_size=40), max_size=4)):
        length = len(payload).to_bytes(8, "little")
        if draw(st.integers(0, 4)) == 0:
            length = draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little")
        header_crc = masked_crc32c(length).to_bytes(4, "little")
        data_crc = masked_crc32c(payload).to_bytes(4, "little")
        if draw(st.integers(0, 4)) == 0:
            data_crc = draw(st.binary(min_size=4, max_size=4))
        out += length + header_crc + payload + data_crc
    return out


def tfrecord_framing_strategy(fx: Fixtures) -> st.SearchStrategy[bytes]:
    """Record framing: mutations of a real Bridge tfrecord file, and streams of frames with bad lengths/CRCs."""
    return mutated(_tfrecord_file(fx).read_bytes()) | _framed() | st.binary(max_size=64)


def tfrecord_framing_run(fx: Fixtures, case: bytes) -> None:
    """Scan, then read every record with both CRCs checked."""
    from datasets_build.sources.tfrecord import iter_records, scan_records

    path = fx.work("tfrecord") / "case.tfrecord"
    path.write_bytes(case)
    scan_records(path)
    for _ in iter_records(path):
        pass


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@st.composite
def _proto(draw: st.DrawFn, depth: int = 0) -> bytes:
    """Random protobuf wire data shaped like tf.train.Example (fields 1/2/3, nested messages, packed lists)."""
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        number = draw(st.integers(0, 4))
        wire = draw(st.sampled_from([0, 1, 2, 2, 2, 5, 3, 6]))
        out += _varint((number << 3) | wire)
        if wire == 0:
            out += _varint(draw(st.integers(0, 2**70)))
        elif wire == 1:
            out += draw(st.binary(min_size=8, max_size=8))
        elif wire == 5:
            out += draw(st.binary(min_size=4, max_size=4))
        elif wire == 2:
            payload = draw(_proto(depth + 1)) if depth < 4 and draw(st.booleans()) else draw(st.binary(max_size=20))
            length = len(payload) if draw(st.integers(0, 5)) else draw(st.integers(0, 2**40))
            out += _varint(length) + payload
    return out


def _examples(fx: Fixtures) -> list[bytes]:
    from datasets_build.sources.tfrecord import iter_records

    return list(iter_records(_tfrecord_file(fx)))


def tfrecord_proto_strategy(fx: Fixtures) -> st.SearchStrategy[bytes]:
    """`tf.train.Example` payloads: mutations of the real episode record, and random wire-format messages."""
    return st.one_of(*(mutated(e, 6) for e in _examples(fx)), _proto())


def tfrecord_proto_run(fx: Fixtures, case: bytes) -> None:
    """Index the Example, decode every feature, then read it as an RLDS episode in a correctly framed file."""
    from datasets_build.errors import DataError
    from datasets_build.sources import open_source
    from datasets_build.sources.tfrecord import HEADER_BYTES, decode_values, masked_crc32c, parse_example

    try:
        view = parse_example(case, "case")
        for key in view.index:
            decode_values(view, key, "case")
    except DataError:
        pass
    length = len(case).to_bytes(8, "little")
    framed = length + masked_crc32c(length).to_bytes(4, "little") + case + masked_crc32c(case).to_bytes(4, "little")
    assert len(framed) == HEADER_BYTES + len(case) + 4
    with replaced(_tfrecord_file(fx), framed):
        source = open_source("rlds", fx.root / "rlds")
        for key in source.episode_keys():
            source.load_episode(key)
            source.summarize_episode(key)


# ------------------------------------------------------------------------------------------------- hdf5

_H5_FIELDS = (
    "actions",
    "dones",
    "states",
    "obs/agentview_rgb",
    "obs/eye_in_hand_rgb",
    "obs/ee_pos",
    "obs/ee_ori",
    "obs/ee_states",
    "obs/gripper_states",
)
_H5_DTYPES = ("uint8", "float32", "float64", "int64", "bool", "S4", "int8")


@st.composite
def _h5_dataset(draw: st.DrawFn, length: int) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(_H5_DTYPES)))
    first = draw(st.sampled_from([length, length, 0, length + 1]))
    rest = draw(st.sampled_from([(), (7,), (3,), (2,), (4, 4, 3), (4, 4), (4, 4, 1), (0,)]))
    shape = draw(st.sampled_from([(first, *rest), rest, ()]))
    size = int(np.prod(shape)) if shape else 1
    raw = draw(st.binary(min_size=size * dtype.itemsize, max_size=size * dtype.itemsize))
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


@st.composite
def _h5_layout(draw: st.DrawFn) -> dict[str, Any]:
    demos = {}
    for name in draw(
        st.lists(st.sampled_from(["demo_0", "demo_1", "demo_10", "demo", "demox", "other"]), max_size=3, unique=True)
    ):
        length = draw(st.integers(0, 4))
        demos[name] = draw(st.dictionaries(st.sampled_from(_H5_FIELDS), _h5_dataset(length), max_size=len(_H5_FIELDS)))
    attrs = draw(
        st.dictionaries(
            st.sampled_from(["problem_info", "macros_image_convention", "env_args"]),
            st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)  # h5py stores UTF-8
            | json_values.map(json.dumps)
            | st.integers(-(2**63), 2**63 - 1)
            | st.binary(min_size=1, max_size=8).map(np.void),
            max_size=3,
        )
    )
    return {
        "data_kind": draw(st.sampled_from(["group", "group", "dataset", "missing"])),
        "attrs": attrs,
        "demos": demos,
    }


def _write_h5(path: Path, layout: dict[str, Any]) -> None:
    with h5py.File(path, "w") as f:
        if layout["data_kind"] == "dataset":
            f.create_dataset("data", data=np.zeros(3))
            return
        if layout["data_kind"] == "missing":
            return
        data = f.create_group("data")
        for key, value in layout["attrs"].items():
            data.attrs[key] = value
        for name, fields in layout["demos"].items():
            demo = data.create_group(name)
            for field_name, array in fields.items():
                demo.create_dataset(field_name, data=array)


def hdf5_strategy(fx: Fixtures) -> st.SearchStrategy[Any]:
    """LIBERO files: random group/dataset trees (names, dtypes, shapes, attributes) and byte-mutated real files."""
    real = next((fx.root / "libero").glob("*.hdf5")).read_bytes()
    return _h5_layout() | mutated(real, 3)


def hdf5_run(fx: Fixtures, case: Any) -> None:
    """Open the file as a LIBERO source and read every demo (full, summary, layout, one image)."""
    from datasets_build.sources import open_source

    path = fx.work("hdf5") / "CASE_TASK_demo.hdf5"
    if isinstance(case, bytes):
        path.write_bytes(case)
    else:
        _write_h5(path, case)
    source = open_source("libero", path)
    try:
        for key in source.episode_keys():
            source.load_episode(key)
            source.summarize_episode(key)
            source.episode_layout(key)
            source.read_image(key, "agentview", 0)
    finally:
        source.close()


# -------------------------------------------------------------------------------------- LeRobot metadata

_ARROW_VALUES = st.one_of(
    st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=3).map(pa.array),
    st.lists(st.text(max_size=6), min_size=1, max_size=3).map(pa.array),
    st.lists(st.floats(allow_nan=True), min_size=1, max_size=3).map(pa.array),
    st.lists(st.none(), min_size=1, max_size=3).map(lambda v: pa.array(v, type=pa.null())),
    st.lists(st.binary(max_size=6), min_size=1, max_size=3).map(pa.array),
    st.lists(st.lists(st.integers(-5, 5), max_size=3), min_size=1, max_size=3).map(pa.array),
)


def _table_edit(table: pa.Table, column: int, action: str, values: pa.Array) -> bytes:
    """Parquet bytes of `table` with one column dropped, replaced by `values` (rows padded/cut), or added."""
    names = table.column_names
    name = names[column % len(names)]
    if action == "drop":
        table = table.drop_columns([name])
    else:
        rows = table.num_rows
        if len(values) != rows:
            values = (
                pa.concat_arrays([values] * (rows // max(1, len(values)) + 1)).slice(0, rows)
                if rows
                else values.slice(0, 0)
            )
        if action == "replace":
            table = table.set_column(column % len(names), name, values)
        else:
            table = table.append_column(f"extra{column}", values)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def lerobot_strategy(fx: Fixtures) -> st.SearchStrategy[tuple[str, Any]]:
    """One of info.json, meta/episodes/*.parquet, meta/tasks.parquet edited (structure or bytes)."""
    root = fx.root / "lerobot"
    info = json.loads((root / "meta" / "info.json").read_text())
    episodes_path = next((root / "meta" / "episodes").rglob("*.parquet"))
    episodes = pq.read_table(episodes_path)
    tasks = pq.read_table(root / "meta" / "tasks.parquet")
    edits = st.tuples(st.integers(0, 1000), st.sampled_from(["drop", "replace", "replace", "add"]), _ARROW_VALUES)

    def info_case(doc: Any) -> tuple[str, bytes]:
        return ("meta/info.json", json.dumps(doc).encode())

    def parquet_case(rel: str, table: pa.Table) -> Callable[[tuple[int, str, pa.Array]], tuple[str, bytes]]:
        return lambda edit: (rel, _table_edit(table, *edit))

    episodes_rel = str(episodes_path.relative_to(root))
    return st.one_of(
        document_edits(info).map(info_case),
        json_values.map(info_case),
        mutated((root / "meta" / "info.json").read_bytes()).map(lambda b: ("meta/info.json", b)),
        edits.map(parquet_case(episodes_rel, episodes)),
        edits.map(parquet_case("meta/tasks.parquet", tasks)),
        mutated(episodes_path.read_bytes(), 2).map(lambda b: (episodes_rel, b)),
        mutated((root / "meta" / "tasks.parquet").read_bytes(), 2).map(lambda b: ("meta/tasks.parquet", b)),
    )


def lerobot_run(fx: Fixtures, case: tuple[str, bytes]) -> None:
    """Open the dataset and read its first episode (full, summary, one image)."""
    from datasets_build.sources import open_source

    rel, data = case
    with replaced(fx.root / "lerobot" / rel, data):
        source = open_source("lerobot", fx.root / "lerobot")
        for key in source.episode_keys()[:1]:
            source.load_episode(key)
            source.summarize_episode(key)
            source.read_image(key, "static", 0)


# ---------------------------------------------------------------------------------- shard tars and cards


def _shard_paths(fx: Fixtures) -> list[Path]:
    return sorted((fx.root / "shards").glob("*.tar"))


def _shard_members(fx: Fixtures) -> list[tuple[str, bytes]]:
    members = []
    with tarfile.open(_shard_paths(fx)[0]) as tar:
        for member in tar:
            handle = tar.extractfile(member)
            members.append((member.name, handle.read() if handle else b""))
    return members


_MEMBER_NAMES = st.sampled_from(
    ["s0.json", "s0.images.npy", "s0.targets.npy", "s1.json", "../up.json", "/abs.json", "a/b.json", "noext", ".json",
     "s0.0.jpg", "s0.target.png", "s0.json"]
)  # fmt: skip


@st.composite
def _tar_bytes(draw: st.DrawFn, members: list[tuple[str, bytes]]) -> bytes:
    """A tar of members drawn from the real shard's (possibly mutated, renamed, duplicated) plus odd entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for _ in range(draw(st.integers(0, 5))):
            name, data = draw(st.sampled_from(members))
            if draw(st.booleans()):
                data = apply_mutations(data, draw(st.lists(_mutation, min_size=1, max_size=3)))
            if draw(st.integers(0, 3)) == 0:
                name = draw(_MEMBER_NAMES)
            info = tarfile.TarInfo(name)
            kind = draw(st.sampled_from([tarfile.REGTYPE] * 6 + [tarfile.SYMTYPE, tarfile.DIRTYPE, tarfile.LNKTYPE]))
            info.type = kind
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = draw(st.sampled_from(["/etc/passwd", "../x", name]))
                tar.addfile(info)
            elif kind == tarfile.DIRTYPE:
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def shard_tar_strategy(fx: Fixtures) -> st.SearchStrategy[bytes]:
    """Shard tars: mutations of a real shard, and tars of edited, renamed and duplicated members."""
    return mutated(_shard_paths(fx)[0].read_bytes()) | _tar_bytes(_shard_members(fx))


def shard_tar_run(fx: Fixtures, case: bytes) -> None:
    """Read the tar's records and decode each into a Sample (the path every consumer of shards takes)."""
    from datasets_build.sample import Sample
    from datasets_build.shards.reader import iter_tar_records, read_samples

    path = fx.work("tar") / "case-000000.tar"
    path.write_bytes(case)
    for record in iter_tar_records(path):
        Sample.decode(record, str(path))
    for _ in read_samples(path, require_card=False):
        pass


def card_strategy(fx: Fixtures) -> st.SearchStrategy[bytes]:
    """dataset_card.json: structural edits of the real card, arbitrary JSON, deep nesting, byte mutations."""
    from datasets_build.shards.card import CARD_NAME

    text = (fx.root / "shards" / CARD_NAME).read_text()
    doc = json.loads(text)
    return st.one_of(
        document_edits(doc).map(lambda d: json.dumps(d).encode()),
        json_values.map(lambda d: json.dumps(d).encode()),
        st.integers(1, 200_000).map(lambda n: nested(n).encode()),
        mutated(text.encode()),
    )


def card_run(fx: Fixtures, case: bytes) -> None:
    """Read the card alone, then open and iterate the shard folder it describes."""
    from datasets_build.shards.card import CARD_NAME, DatasetCard
    from datasets_build.shards.reader import ShardSet

    card = fx.root / "shards" / CARD_NAME
    with replaced(card, case):
        DatasetCard.read(card)
        for _ in ShardSet(fx.root / "shards", verify=True):
            pass


# ------------------------------------------------------------------------------------------- answers

_WORDS = st.sampled_from(
    ["(", ")", "[", "]", ",", " ", "B", "(C)", "yes", "no", "answer is", "cm", "m²", "feet", "square meter", "-",
     "1e999", "nan", "inf", "0.5", "3", ".", "<fast_3>", "<fast_99999999999999999999>", "<fast_-1>", "é", "\n"]
)  # fmt: skip
answer_texts = st.lists(_WORDS | st.text(max_size=6) | st.floats().map(str), max_size=12).map("".join)
_REGIONS = st.one_of(
    st.fixed_dictionaries(
        {"size": st.lists(st.integers(-3, 6), max_size=3), "counts": st.lists(st.integers(-2, 40), max_size=5)}
    ),
    st.dictionaries(st.sampled_from(["size", "counts"]), json_values, max_size=2),
)
_METAS = st.fixed_dictionaries(
    {},
    optional={
        "answer_kind": st.sampled_from(
            ["points", "choice", "yes_no", "quantity", "box", "trajectory", "text", "fast", "boxes", "x"]
        )
        | json_values,
        "question_type": st.sampled_from(["trajectory", "affordance"]) | json_values,
        "region": _REGIONS | json_values,
        "image_size": st.lists(st.integers(-5, 5) | st.floats() | st.text(max_size=3), max_size=3) | json_values,
        "actions": st.lists(st.lists(st.floats(), max_size=3), max_size=5) | json_values,
    },
)


def answers_strategy(fx: Fixtures) -> st.SearchStrategy[tuple[str, str, dict[str, Any]]]:
    """A model's answer, a reference answer and the reference sample's `meta`, each adversarial."""
    return st.tuples(answer_texts, answer_texts, _METAS)


def answers_run(fx: Fixtures, case: tuple[str, str, dict[str, Any]]) -> None:
    """Score the answer (with the FAST tokenizer), and run each parser on both texts."""
    from datasets_build import answers

    prediction, reference, meta = case
    if "fast_tokenizer" not in fx.cache:
        from datasets_build.fast.tokenizer import FastTokenizer

        fx.cache["fast_tokenizer"] = FastTokenizer.from_pretrained(fx.root / "fast")
    answers.score_answer(prediction, reference, meta, fx.cache["fast_tokenizer"])
    answers.score_answer(prediction, reference, meta)
    for text in (prediction, reference):
        for parse in (
            answers.parse_choice,
            answers.parse_yes_no,
            answers.parse_quantity,
            answers.parse_number,
            answers.parse_tuples,
        ):
            parse(text)
        for strict in (answers.parse_points, answers.parse_boxes):
            try:  # documented: ValueError when the groups do not have the expected arity
                strict(text)
            except ValueError as exc:  # noqa: PERF203  (one parser per try)
                if "not a list of" not in str(exc):
                    raise


# ------------------------------------------------------------------------------------------ FAST decode


def fast_strategy(fx: Fixtures) -> st.SearchStrategy[tuple[str, Any]]:
    """Token id sequences to decode (valid, out of range, huge, negative) and edited tokenizer folders."""
    from datasets_build.fast.tokenizer import CONFIG_NAME, TOKENIZER_NAME, FastTokenizer

    tokenizer = FastTokenizer.from_pretrained(fx.root / "fast")
    valid = [tokenizer.encode(c) for c in fx.seeds["fast_chunks"][:8]]
    ids = st.integers(-5, tokenizer.vocab_size + 5) | st.integers(-(2**70), 2**70)
    config = json.loads((fx.root / "fast" / CONFIG_NAME).read_text())
    tokenizer_json = json.loads((fx.root / "fast" / TOKENIZER_NAME).read_text())
    return st.one_of(
        st.lists(ids, max_size=40).map(lambda v: ("ids", v)),
        st.tuples(st.sampled_from(valid), st.lists(st.tuples(st.integers(0, 100), ids), max_size=3)).map(
            lambda vc: ("ids", _edit_ids(*vc))
        ),
        answer_texts.map(lambda t: ("text", t)),
        document_edits(config).map(lambda d: (CONFIG_NAME, json.dumps(d).encode())),
        document_edits(tokenizer_json).map(lambda d: (TOKENIZER_NAME, json.dumps(d).encode())),
        mutated((fx.root / "fast" / CONFIG_NAME).read_bytes()).map(lambda b: (CONFIG_NAME, b)),
    )


def _edit_ids(ids: list[int], edits: list[tuple[int, int]]) -> list[int]:
    out = list(ids)
    for at, value in edits:
        if out:
            out[at % len(out)] = value
    return out


def fast_run(fx: Fixtures, case: tuple[str, Any]) -> None:
    """Decode ids or an answer text with the real tokenizer, or load an edited tokenizer folder and decode."""
    from datasets_build.answers import score_fast_answer
    from datasets_build.fast.tokenizer import FastTokenizer

    kind, value = case
    if kind == "ids":
        FastTokenizer.from_pretrained(fx.root / "fast").decode(value)
        return
    if kind == "text":
        tokenizer = FastTokenizer.from_pretrained(fx.root / "fast")
        score_fast_answer(value, np.zeros((tokenizer.config.horizon, tokenizer.config.action_dim)), tokenizer)
        return
    folder = fx.work("fast") / "tok"
    if not folder.exists():
        shutil.copytree(fx.root / "fast", folder)
    with replaced(folder / kind, value):
        tokenizer = FastTokenizer.from_pretrained(folder)
        tokenizer.decode(tokenizer.encode(fx.seeds["fast_chunks"][0]))


# ----------------------------------------------------------------------------------------- recipe YAML


def _recipes() -> list[Path]:
    return sorted((PROJECT / "recipes").glob("*.yaml"))


_yaml_values = st.one_of(
    json_values,
    st.sampled_from(
        [
            "${vars.missing}",
            "${stages.x.out}",
            "${oops",
            "!!python/object/apply:os.system ['echo']",
            "&a [*a]",
            "{",
            "- -",
        ]
    ),
)


@st.composite
def _recipe_case(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    path = draw(st.sampled_from(_recipes()))
    text = path.read_text()
    mode = draw(st.sampled_from(["edit", "edit", "text", "bytes"]))
    if mode == "edit":
        doc = yaml.safe_load(text)
        text = yaml.safe_dump(draw(document_edits(doc, _yaml_values)), sort_keys=False)
    elif mode == "text":
        lines = text.splitlines()
        at = draw(st.integers(0, len(lines)))
        lines[at:at] = [
            draw(st.sampled_from(["  : x", "\t- y", "stages: 3", "extends: [x]", "profiles: 1", "a: ${b}"]))
        ]
        text = "\n".join(lines)
    else:
        text = apply_mutations(text.encode(), draw(st.lists(_mutation, min_size=1, max_size=3))).decode(
            "utf-8", "replace"
        )
    overrides = draw(
        st.lists(
            st.sampled_from(
                ["x", "=1", "stages.a.b=1", "vars.run_dir=/tmp/r", "profile=tiny", "launch.num_processes=-1"]
            ),
            max_size=2,
        )
    )
    return path.name, text, overrides


def recipe_strategy(fx: Fixtures) -> st.SearchStrategy[tuple[str, str, list[str]]]:
    """The project's recipes with structural edits, inserted lines and byte mutations, plus odd overrides."""
    return _recipe_case()


def recipe_run(fx: Fixtures, case: tuple[str, str, list[str]]) -> None:
    """Plan the edited recipe (load, extend, resolve interpolations, type every stage config) and dry-run it."""
    from recipes.runner import dry_run, make_plan

    name, text, overrides = case
    folder = fx.work("recipes")
    for path in _recipes():  # `extends:` names a sibling recipe or one under templates/
        target = folder / path.name
        if not target.exists():
            shutil.copyfile(path, target)
    if not (folder / "templates").exists():
        shutil.copytree(PROJECT / "recipes" / "templates", folder / "templates")
    with replaced(folder / name, text.encode()):
        plan = make_plan(folder / name, overrides)
        dry_run(plan, [s.name for s in plan.stages], set())


# ---------------------------------------------------------------------------------------------- runner


@dataclass(frozen=True)
class Target:
    """One reader or parser under fuzz: its strategy and how a case is fed to it."""

    name: str
    strategy: Callable[[Fixtures], st.SearchStrategy[Any]]
    run: Callable[[Fixtures, Any], None]


TARGETS: tuple[Target, ...] = (
    Target("npz", npz_strategy, npz_run),
    Target("npy-pickle", npy_strategy, npy_run),
    Target("tfrecord-framing", tfrecord_framing_strategy, tfrecord_framing_run),
    Target("tfrecord-protobuf", tfrecord_proto_strategy, tfrecord_proto_run),
    Target("hdf5", hdf5_strategy, hdf5_run),
    Target("lerobot-meta", lerobot_strategy, lerobot_run),
    Target("shard-tar", shard_tar_strategy, shard_tar_run),
    Target("shard-card", card_strategy, card_run),
    Target("answers", answers_strategy, answers_run),
    Target("fast-decode", fast_strategy, fast_run),
    Target("recipe-yaml", recipe_strategy, recipe_run),
)


@dataclass
class Report:
    """What one target's run saw: cases tried, cases refused with a toolkit error, escapes by place."""

    target: str
    cases: int = 0
    refused: int = 0
    escapes: dict[str, list[Any]] = field(default_factory=dict)  # signature -> [count, example, traceback]

    @property
    def escaped(self) -> int:
        """Cases that raised something other than a ToolkitError."""
        return sum(entry[0] for entry in self.escapes.values())

    def record(self, exc: BaseException, case: Any) -> None:
        """Count an escape under its exception type and innermost project frame."""
        frames = [
            f for f in traceback.extract_tb(exc.__traceback__) if str(PROJECT) in f.filename and f.filename != __file__
        ]
        place = f"{Path(frames[-1].filename).relative_to(PROJECT)}:{frames[-1].lineno}" if frames else "?"
        signature = f"{type(exc).__name__} at {place}"
        entry = self.escapes.setdefault(signature, [0, None, ""])
        entry[0] += 1
        if entry[1] is None:
            entry[1] = repr(case)[:300]
            entry[2] = "".join(traceback.format_exception(exc))


def fuzz(target: Target, fx: Fixtures, cases: int, seed_value: int = 0) -> Report:
    """Feed up to `cases` generated cases to `target`; ToolkitErrors are refusals, anything else an escape."""
    report = Report(target.name)

    @settings(
        max_examples=cases,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(target.strategy(fx))
    def body(case: Any) -> None:
        report.cases += 1
        try:
            target.run(fx, case)
        except ToolkitError:
            report.refused += 1
        except Exception as exc:  # every other exception is what this harness counts
            report.record(exc, case)

    seed(seed_value)(body)()
    return report
