"""TFRecord files and `tf.train.Example` protos read without TensorFlow.

Framing per record: uint64 LE length, uint32 masked CRC32C of those 8 bytes, the data, uint32 masked
CRC32C of the data; both CRCs are checked. The Example is decoded by a small protobuf wire-format
reader that indexes the features first and decodes only the ones asked for (floats and packed ints
through numpy), so images that are not wanted are never copied.

CRC32C (Castagnoli) comes from the `google-crc32c` C extension when it is installed, else from a
vectorised numpy implementation (the record is cut into lanes CRC'd in parallel, then the lane CRCs
are combined with precomputed "append n zero bytes" operators over GF(2)).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from datasets_build.errors import DataError

# ----------------------------------------------------------------------------------------------- CRC32C

_POLY = 0x82F63B78  # Castagnoli, bit-reflected
_MASK_DELTA = 0xA282EAD8
_SMALL = 1024  # below this many bytes the plain byte loop is faster than the lanes


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_T0 = _byte_table()
_T_LIST: list[int] = [int(v) for v in _T0]
_T1 = (_T0 >> 8) ^ _T0[_T0 & 0xFF]
_T2 = (_T1 >> 8) ^ _T0[_T1 & 0xFF]
_T3 = (_T2 >> 8) ^ _T0[_T2 & 0xFF]
_V16 = np.arange(65536, dtype=np.uint32)
# One 32-bit step: r ^= word; r = _LO[r & 0xFFFF] ^ _HI[r >> 16]  (slicing-by-4 folded into two 16-bit tables)
_LO = (_T3[_V16 & 0xFF] ^ _T2[_V16 >> 8]).astype(np.uint32)
_HI = (_T1[_V16 & 0xFF] ^ _T0[_V16 >> 8]).astype(np.uint32)
del _V16


def _crc32c_bytes(data: bytes | memoryview, register: int = 0xFFFFFFFF) -> int:
    """Byte-at-a-time CRC32C register update (for short inputs)."""
    table = _T_LIST
    for byte in bytes(data):
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


class _ZeroOperator:
    """The linear map "feed n zero bytes" on a CRC register, as four 256-entry byte tables."""

    def __init__(self, columns: np.ndarray) -> None:
        self.columns = columns.astype(np.uint32)  # image of each of the 32 register bits
        bits = np.arange(256)
        self.tables = np.zeros((4, 256), dtype=np.uint32)
        for byte in range(4):
            for bit in range(8):
                self.tables[byte] ^= np.where((bits >> bit) & 1, self.columns[8 * byte + bit], 0).astype(np.uint32)

    def apply(self, values: np.ndarray) -> np.ndarray:
        t = self.tables
        return t[0][values & 0xFF] ^ t[1][(values >> 8) & 0xFF] ^ t[2][(values >> 16) & 0xFF] ^ t[3][values >> 24]

    def squared(self) -> _ZeroOperator:
        return _ZeroOperator(self.apply(self.columns))


def _one_zero_byte() -> _ZeroOperator:
    columns = np.array([1 << k for k in range(32)], dtype=np.uint32)
    return _ZeroOperator(_T0[columns & 0xFF] ^ (columns >> 8))


_ZERO_POWERS: list[_ZeroOperator] = [_one_zero_byte()]  # _ZERO_POWERS[k] feeds 2**k zero bytes


def _zero_power(k: int) -> _ZeroOperator:
    while len(_ZERO_POWERS) <= k:
        _ZERO_POWERS.append(_ZERO_POWERS[-1].squared())
    return _ZERO_POWERS[k]


def _lane_bytes(size: int) -> int:
    """Lane length (a power of two >= 16) balancing the per-step overhead against the combine cost."""
    lane = 16
    while lane * lane * 48 < size and lane < 4096:
        lane *= 2
    return lane


def _crc32c_numpy(data: bytes | memoryview) -> int:
    """CRC32C of `data` with numpy: many lanes in parallel, combined with zero-feeding operators."""
    raw = np.frombuffer(data, dtype=np.uint8)
    size = raw.size
    lane = _lane_bytes(size)
    lanes = -(-size // lane)
    buf = np.zeros(lanes * lane, dtype=np.uint8)
    pad = buf.size - size  # leading zeros leave a zero register unchanged
    buf[pad:] = raw
    buf[pad : pad + 4] ^= np.uint8(0xFF)  # the initial register 0xFFFFFFFF, folded into the first word
    rows = np.ascontiguousarray(buf.view("<u4").reshape(lanes, lane // 4).T)
    register = np.zeros(lanes, dtype=np.uint32)
    lo = np.empty(lanes, dtype=np.uint32)
    hi = np.empty(lanes, dtype=np.uint32)
    if sys.byteorder == "little":
        halves = register.view(np.uint16)
        low_half, high_half = halves[0::2], halves[1::2]
        for row in rows:
            np.bitwise_xor(register, row, out=register)
            np.take(_LO, low_half, out=lo, mode="clip")
            np.take(_HI, high_half, out=hi, mode="clip")
            np.bitwise_xor(lo, hi, out=register)
    else:  # pragma: no cover - big-endian hosts
        index = np.empty(lanes, dtype=np.uint32)
        for row in rows:
            np.bitwise_xor(register, row, out=register)
            np.bitwise_and(register, 0xFFFF, out=index)
            np.take(_LO, index, out=lo, mode="clip")
            np.right_shift(register, 16, out=index)
            np.take(_HI, index, out=hi, mode="clip")
            np.bitwise_xor(lo, hi, out=register)
    # Combine lanes pairwise: crc(A + B) register = zeros(len(B)) applied to A's, xor B's.
    width = 1 << max(0, (lanes - 1).bit_length())
    values = np.zeros(width, dtype=np.uint32)
    values[width - lanes :] = register  # leading all-zero lanes contribute nothing
    power = lane.bit_length() - 1
    while values.size > 1:
        values = _zero_power(power).apply(values[0::2]) ^ values[1::2]
        power += 1
    return int(values[0]) ^ 0xFFFFFFFF


try:  # the C library, when installed, is ~10x faster than numpy
    import google_crc32c as _google_crc32c

    _HAVE_GOOGLE = getattr(_google_crc32c, "implementation", "") == "c"
except ImportError:  # pragma: no cover - depends on the environment
    _HAVE_GOOGLE = False

CRC32C_IMPLEMENTATION = "google-crc32c" if _HAVE_GOOGLE else "numpy"


def crc32c(data: bytes | memoryview) -> int:
    """CRC32C (Castagnoli) of `data`, as TFRecord uses it."""
    if _HAVE_GOOGLE:
        return int(_google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data))
    if len(data) < _SMALL:
        return _crc32c_bytes(data) ^ 0xFFFFFFFF
    return _crc32c_numpy(data)


def crc32c_numpy(data: bytes | memoryview) -> int:
    """CRC32C through the numpy path whatever is installed (for tests and benchmarks)."""
    if len(data) < _SMALL:
        return _crc32c_bytes(data) ^ 0xFFFFFFFF
    return _crc32c_numpy(data)


def mask_crc(crc: int) -> int:
    """TFRecord's CRC masking: rotate right by 15 bits and add a constant (mod 2**32)."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c(data: bytes | memoryview) -> int:
    """The masked CRC32C stored in TFRecord framing."""
    return mask_crc(crc32c(data))


# -------------------------------------------------------------------------------------------- framing

HEADER_BYTES = 12  # uint64 length + uint32 masked crc of the length
FOOTER_BYTES = 4  # uint32 masked crc of the data


def _where(path: Path, index: int) -> str:
    return f"{path}: record {index}"


def _read_header(handle: BinaryIO, path: Path, index: int, offset: int, file_size: int) -> int:
    """Read and check one record header at `offset`; return the data length."""
    header = handle.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES:
        raise DataError(f"truncated record header at byte {offset}", _where(path, index), "truncated")
    stored = int.from_bytes(header[8:12], "little")
    computed = mask_crc(_crc32c_bytes(header[:8]) ^ 0xFFFFFFFF)
    if stored != computed:
        raise DataError(
            f"corrupt length CRC at byte {offset} (stored {stored:#010x}, computed {computed:#010x})",
            _where(path, index),
            "length_crc",
        )
    length = int.from_bytes(header[:8], "little")
    end = offset + HEADER_BYTES + length + FOOTER_BYTES
    if end > file_size:
        raise DataError(
            f"truncated record at byte {offset}: needs {end - offset} bytes, file has {file_size - offset}",
            _where(path, index),
            "truncated",
        )
    return length


def scan_records(path: Path) -> tuple[list[int], DataError | None]:
    """Byte offsets of every record, reading only the 12-byte headers (data is seeked over).

    Returns the offsets found and the error that stopped the scan (a corrupt length CRC or a
    truncated record), or None when the file ended cleanly. Records after such an error cannot
    be located.
    """
    offsets: list[int] = []
    try:
        file_size = path.stat().st_size
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(f"cannot open ({exc.strerror or exc})", path) from exc
    with handle:
        offset = 0
        while offset < file_size:
            try:
                handle.seek(offset)
                length = _read_header(handle, path, len(offsets), offset, file_size)
            except DataError as exc:
                return offsets, exc
            offsets.append(offset)
            offset += HEADER_BYTES + length + FOOTER_BYTES
    return offsets, None


def read_record(handle: BinaryIO, path: Path, offset: int, index: int, verify: bool = True) -> bytes:
    """The data of the record at `offset` of an open TFRecord file, both CRCs checked."""
    file_size = handle.seek(0, 2)
    handle.seek(offset)
    length = _read_header(handle, path, index, offset, file_size)
    data = handle.read(length)
    footer = handle.read(FOOTER_BYTES)
    if len(data) < length or len(footer) < FOOTER_BYTES:
        raise DataError(f"truncated record at byte {offset}", _where(path, index), "truncated")
    if verify:
        stored = int.from_bytes(footer, "little")
        computed = masked_crc32c(data)
        if stored != computed:
            raise DataError(
                f"corrupt data CRC (stored {stored:#010x}, computed {computed:#010x})", _where(path, index), "data_crc"
            )
    return data


def iter_records(path: Path, verify: bool = True) -> Iterator[bytes]:
    """Every record of a TFRecord file in order (raises DataError at the first bad one)."""
    offsets, error = scan_records(path)
    with path.open("rb") as handle:
        for index, offset in enumerate(offsets):
            yield read_record(handle, path, offset, index, verify)
    if error is not None:
        raise error


# ----------------------------------------------------------------------------------- protobuf (Example)

_KINDS = {1: "bytes", 2: "float", 3: "int64"}  # tf.train.Feature oneof: bytes_list, float_list, int64_list


class _ProtoError(ValueError):
    """Malformed protobuf wire data (wrapped into DataError with the record named)."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    result = byte & 0x7F
    shift = 7
    pos += 1
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _ProtoError("varint longer than 10 bytes")


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of each field in buf[start:end].

    For varints the "value" span is the varint itself; for LEN fields it is the payload.
    """
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value_start = pos
            _, pos = _varint(buf, pos)
            yield number, wire, value_start, pos
            continue
        if wire == 2:
            length, pos = _varint(buf, pos)
            value_start, pos = pos, pos + length
        elif wire == 5:
            value_start, pos = pos, pos + 4
        elif wire == 1:
            value_start, pos = pos, pos + 8
        else:
            raise _ProtoError(f"unsupported wire type {wire}")
        if pos > end:
            raise _ProtoError("field runs past the end of its message")
        yield number, wire, value_start, pos
    if pos != end:
        raise _ProtoError("message ends inside a field")


def _decode_packed_varints(buf: bytes, start: int, end: int) -> np.ndarray:
    """Packed varints -> int64 (two's complement, as int64_list stores negatives), vectorised."""
    raw = np.frombuffer(buf, dtype=np.uint8, count=end - start, offset=start)
    if raw.size == 0:
        return np.zeros(0, dtype=np.int64)
    last = np.flatnonzero(raw < 0x80)
    if last.size == 0 or last[-1] != raw.size - 1:
        raise _ProtoError("truncated packed varint")
    if last.size == raw.size:
        return raw.astype(np.int64)
    first = np.empty_like(last)
    first[0] = 0
    first[1:] = last[:-1] + 1
    lengths = last - first + 1
    if int(lengths.max()) > 10:
        raise _ProtoError("varint longer than 10 bytes")
    position = np.arange(raw.size) - np.repeat(first, lengths)
    parts = (raw & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    return np.bitwise_or.reduceat(parts, first).view(np.int64)


@dataclass
class ExampleView:
    """One `tf.train.Example`, indexed but not decoded: key -> (kind, start, end) of its list message."""

    data: bytes
    index: dict[str, tuple[str, int, int]]

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def keys(self) -> list[str]:
        """Feature keys in the record."""
        return list(self.index)

    def kind(self, key: str) -> str:
        """The stored list: "bytes", "float", "int64", or "empty" (a Feature with no list set)."""
        return self.index[key][0]

    def floats(self, key: str) -> np.ndarray:
        """A float_list as float32 (packed or not)."""
        _, start, end = self.index[key]
        chunks: list[np.ndarray] = []
        for number, wire, lo, hi in _fields(self.data, start, end):
            if number != 1:
                continue
            if wire == 2:
                if (hi - lo) % 4:
                    raise _ProtoError("packed float payload not a multiple of 4 bytes")
                chunks.append(np.frombuffer(self.data, dtype="<f4", count=(hi - lo) // 4, offset=lo))
            elif wire == 5:
                chunks.append(np.frombuffer(self.data, dtype="<f4", count=1, offset=lo))
            else:
                raise _ProtoError(f"float_list value with wire type {wire}")
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return (chunks[0] if len(chunks) == 1 else np.concatenate(chunks)).astype(np.float32)

    def ints(self, key: str) -> np.ndarray:
        """An int64_list as int64 (packed or not)."""
        _, start, end = self.index[key]
        chunks: list[np.ndarray] = []
        for number, wire, lo, hi in _fields(self.data, start, end):
            if number != 1:
                continue
            if wire == 2:
                chunks.append(_decode_packed_varints(self.data, lo, hi))
            elif wire == 0:
                value, _ = _varint(self.data, lo)
                chunks.append(np.array([value], dtype=np.uint64).view(np.int64))
            else:
                raise _ProtoError(f"int64_list value with wire type {wire}")
        if not chunks:
            return np.zeros(0, dtype=np.int64)
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def byte_strings(self, key: str) -> list[bytes]:
        """A bytes_list as a list of bytes."""
        _, start, end = self.index[key]
        data = self.data
        out: list[bytes] = []
        for number, wire, lo, hi in _fields(data, start, end):
            if number != 1:
                continue
            if wire != 2:
                raise _ProtoError(f"bytes_list value with wire type {wire}")
            out.append(data[lo:hi])
        return out

    def count(self, key: str) -> int:
        """Number of values of a bytes_list (without copying them)."""
        _, start, end = self.index[key]
        return sum(1 for number, _, _, _ in _fields(self.data, start, end) if number == 1)


def _index_example(data: bytes) -> dict[str, tuple[str, int, int]]:
    index: dict[str, tuple[str, int, int]] = {}
    for number, wire, f_start, f_end in _fields(data, 0, len(data)):
        if number != 1 or wire != 2:  # Example.features = 1
            continue
        for entry_number, entry_wire, e_start, e_end in _fields(data, f_start, f_end):
            if entry_number != 1 or entry_wire != 2:  # Features.feature = 1 (map entries)
                continue
            key: str | None = None
            value: tuple[str, int, int] = ("empty", e_start, e_start)
            for part, part_wire, p_start, p_end in _fields(data, e_start, e_end):
                if part_wire != 2:
                    continue
                if part == 1:  # map key
                    key = data[p_start:p_end].decode("utf-8")
                elif part == 2:  # map value: Feature
                    for kind_number, kind_wire, k_start, k_end in _fields(data, p_start, p_end):
                        if kind_wire == 2 and kind_number in _KINDS:
                            value = (_KINDS[kind_number], k_start, k_end)  # last oneof member wins
            if key is None:
                raise _ProtoError("feature map entry without a key")
            index[key] = value
    return index


def parse_example(data: bytes, where: str) -> ExampleView:
    """Index a serialized `tf.train.Example`; DataError naming `where` when it is malformed."""
    try:
        return ExampleView(data, _index_example(data))
    except (_ProtoError, IndexError, UnicodeDecodeError) as exc:
        raise DataError(f"malformed tf.train.Example ({exc or 'truncated'})", where, "example") from exc


def decode_values(view: ExampleView, key: str, where: str) -> np.ndarray | list[bytes]:
    """The values of one feature: float32 / int64 array or list of bytes; DataError if malformed."""
    try:
        kind = view.kind(key)
        if kind == "float":
            return view.floats(key)
        if kind == "int64":
            return view.ints(key)
        if kind == "bytes":
            return view.byte_strings(key)
        return np.zeros(0, dtype=np.float32)
    except (_ProtoError, IndexError) as exc:
        raise DataError(f"malformed {key} list ({exc or 'truncated'})", where, key) from exc
