"""`Sample`: one shard record (a chat-format training example with its images and provenance).

On disk (webdataset, record layout 2): every record has the same three members, so `datasets` infers one
schema for every corpus and mix (`datasets.load_dataset("webdataset", ...)` and a Hub repo load them):

- `{key}.json`: `schema_version`, `messages` (HF chat format, content always a list of parts `{"type":
  "image"}` / `{"type": "text", "text": ...}`), `task`, `source`, `image_format`, and `meta` as a JSON
  *string* (the facts the answer came from, so that `verify` can re-check it; any shape per corpus);
- `{key}.images.npy`: the encoded images (JPEG or PNG bytes) as a 1-D numpy bytes array, read by
  `numpy.load(..., allow_pickle=False)`; `datasets` sees a list of binary values (`List(Image())` once
  the features say so: `datasets_build.shards.hf.FEATURES`);
- `{key}.targets.npy`: the same for the generation target (`omni_generation`), empty elsewhere.

Layout 1 (`{key}.{i}.jpg|png` per image, `{key}.target.png`, `meta` as an object, image count in the JSON)
still decodes. No pickle anywhere.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

from datasets_build.errors import DataError
from datasets_build.safe_pickle import NPY_HEADER_ERRORS

SCHEMA_VERSION = 2  # record layout written now; `decode` also reads LEGACY_SCHEMA_VERSION
LEGACY_SCHEMA_VERSION = 1
JSON_MEMBER = "json"
IMAGES_MEMBER = "images.npy"
TARGETS_MEMBER = "targets.npy"
MEMBERS = (IMAGES_MEMBER, JSON_MEMBER, TARGETS_MEMBER)  # every layout-2 record, in tar order
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]{1,80}$")  # tar member names hold <= 100 bytes
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")
ROLES = ("system", "user", "assistant")
ImageFormat = Literal["jpg", "png"]


def key_part(text: str, max_length: int, fallback: str) -> str:
    """`text` reduced to the characters a sample key may hold (runs of others become "_"), at most `max_length`."""
    return _KEY_UNSAFE.sub("_", text).strip("_")[:max_length] or fallback


def count_image_parts(messages: list[dict[str, Any]]) -> int:
    """Number of `{"type": "image"}` content parts across all turns."""
    return sum(
        1
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == "image"
    )


def validate_messages(messages: Any, where: str) -> None:
    """Check HF chat format: a list of {role, content} with content a string or typed parts."""
    if not isinstance(messages, list) or not messages:
        raise DataError("must be a non-empty list", where, "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise DataError(f"turn {i} needs a role in {ROLES}", where, f"messages[{i}].role")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise DataError(f"turn {i} content must be a string or a list of parts", where, f"messages[{i}].content")
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                continue
            if kind == "image":
                continue
            raise DataError(f"bad content part {part!r}", where, f"messages[{i}].content[{j}]")


def user_turn(text: str, n_images: int = 1) -> dict[str, Any]:
    """A user turn with `n_images` image parts followed by `text`."""
    parts: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def assistant_turn(text: str) -> dict[str, Any]:
    """An assistant turn holding one text part."""
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def _to_pil(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    arr = np.asarray(image)
    if arr.dtype not in (np.uint8, np.uint16):
        raise DataError(f"image arrays must be uint8 or uint16, got {arr.dtype}", field="images")
    return Image.fromarray(arr)


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages in the one shape every record stores: `{"role", "content": [parts]}`, string content as one
    text part, parts reduced to `{"type": "image"}` / `{"type": "text", "text"}` (so Arrow infers one type)."""
    out = []
    for message in messages:
        content = message["content"]
        parts: list[dict[str, Any]] = (
            [{"type": "text", "text": content}]
            if isinstance(content, str)
            else [{"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]} for p in content]
        )
        out.append({"role": message["role"], "content": parts})
    return out


def pack_images(encoded: Sequence[bytes]) -> bytes:
    """Encoded images as one `.npy` member: a 1-D fixed-width bytes array (npy format 1.0, no pickle).

    numpy pads items to the widest and strips trailing NUL bytes on read, so an item must not end in NUL
    (JPEG ends with FFD9, PNG with its IEND checksum).
    """
    if any(not item or item[-1:] == b"\0" for item in encoded):
        raise DataError("an encoded image is empty or ends with a NUL byte", field=IMAGES_MEMBER)
    width = max((len(item) for item in encoded), default=1)
    array = np.array(list(encoded), dtype=f"S{width}") if encoded else np.zeros((0,), dtype="S1")
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, version=(1, 0), allow_pickle=False)
    return buf.getvalue()


def unpack_images(data: bytes, where: str = "shard", member: str = IMAGES_MEMBER) -> list[bytes]:
    """Inverse of `pack_images`; DataError naming the member when it is not a 1-D bytes array."""
    try:
        array = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except NPY_HEADER_ERRORS as exc:
        raise DataError(f"not a numpy bytes array ({exc})", where, member) from exc
    if array.ndim != 1 or array.dtype.kind != "S":
        raise DataError(f"must be a 1-D bytes array, got {array.dtype} {array.shape}", where, member)
    return [bytes(item) for item in array]


def packed_count(data: bytes, where: str = "shard", member: str = IMAGES_MEMBER) -> int:
    """Number of images in a `pack_images` member, from its npy header alone."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    except NPY_HEADER_ERRORS as exc:
        raise DataError(f"not a numpy bytes array ({exc})", where, member) from exc
    if len(shape) != 1 or dtype.kind != "S":
        raise DataError(f"must be a 1-D bytes array, got {dtype} {shape}", where, member)
    return int(shape[0])


def meta_text(meta: Mapping[str, Any]) -> str:
    """`meta` as the JSON string a layout-2 record stores (sorted keys, compact)."""
    return json.dumps(meta, separators=(",", ":"), sort_keys=True)


def record_json(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes of a record's `.json` member (sorted keys, compact, ASCII)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def _open_image(data: bytes, where: str, member: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode image ({exc})", where, member) from exc
    return image


def upgrade_record(record: Mapping[str, Any], where: str = "shard") -> dict[str, Any]:
    """A layout-1 raw record (`{i}.jpg`, `target.png`, meta object) as a layout-2 one, images copied as encoded.

    Layout-2 records come back unchanged (members other than `__key__` and the three members dropped).
    """
    here = f"{where}:{record.get('__key__', '')}"
    payload = _payload(record, here)
    key = record.get("__key__", "")
    if payload.get("schema_version", LEGACY_SCHEMA_VERSION) >= 2:
        return {"__key__": key, **{m: record[m] for m in MEMBERS if m in record}}
    fmt = payload.get("image_format", "jpg")
    images = []
    for i in range(int(payload.get("images", 0))):
        name = f"{i}.{fmt}"
        if name not in record:
            raise DataError("missing image member", here, name)
        images.append(bytes(record[name]))
    targets = [bytes(record["target.png"])] if "target.png" in record else []
    meta = payload.get("meta", {})
    if not isinstance(meta, dict):
        raise DataError("meta must be an object", here, "meta")
    validate_messages(payload.get("messages"), here)
    new = {
        "schema_version": SCHEMA_VERSION,
        "messages": normalize_messages(payload["messages"]),
        "task": str(payload.get("task", "")),
        "source": str(payload.get("source", "")),
        "meta": meta_text(meta),
        "image_format": fmt,
    }
    return {
        "__key__": key,
        IMAGES_MEMBER: pack_images(images),
        JSON_MEMBER: record_json(new),
        TARGETS_MEMBER: pack_images(targets),
    }


def _payload(record: Mapping[str, Any], here: str) -> dict[str, Any]:
    if JSON_MEMBER not in record:
        raise DataError("record has no .json member", here, JSON_MEMBER)
    try:
        payload = json.loads(record[JSON_MEMBER])
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise DataError(f"invalid JSON ({exc})", here, JSON_MEMBER) from exc
    if not isinstance(payload, dict):
        raise DataError("must be a JSON object", here, JSON_MEMBER)
    version = payload.get("schema_version", LEGACY_SCHEMA_VERSION)
    if not isinstance(version, int) or version not in (LEGACY_SCHEMA_VERSION, SCHEMA_VERSION):
        raise DataError(f"record layout {version!r} is not supported", here, "schema_version")
    return payload


@dataclass
class Sample:
    """One training example. `images[i]` fills the i-th `{"type": "image"}` part of `messages`."""

    key: str
    messages: list[dict[str, Any]]
    images: list[Image.Image] = field(default_factory=list)
    task: str = ""
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    target: Image.Image | None = None
    image_format: ImageFormat = "jpg"

    def __post_init__(self) -> None:
        if not _KEY_RE.match(self.key):
            raise DataError("keys are 1-80 letters, digits, '_' or '-'", f"sample {self.key!r}", "__key__")
        self.images = [_to_pil(im) for im in self.images]
        if self.target is not None:
            self.target = _to_pil(self.target)
        self.validate()

    def validate(self) -> None:
        """Raise DataError if messages and images disagree or the record is malformed."""
        where = f"sample {self.key}"
        validate_messages(self.messages, where)
        n_parts = count_image_parts(self.messages)
        if n_parts != len(self.images):
            raise DataError(f"{n_parts} image parts but {len(self.images)} images", where, "images")
        if self.image_format not in ("jpg", "png"):
            raise DataError(f"image_format must be jpg or png, got {self.image_format}", where, "image_format")

    def to_json(self) -> dict[str, Any]:
        """The `{key}.json` payload (layout 2: meta as a JSON string)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "messages": normalize_messages(self.messages),
            "task": self.task,
            "source": self.source,
            "meta": meta_text(self.meta),
            "image_format": self.image_format,
        }

    def encode(self, jpeg_quality: int = 95) -> dict[str, Any]:
        """Encode into a webdataset record: {"__key__", "json", "images.npy", "targets.npy"} (bytes)."""
        encoded = []
        for image in self.images:
            buf = io.BytesIO()
            if self.image_format == "jpg":
                image.convert("RGB").save(buf, format="JPEG", quality=jpeg_quality)
            else:
                image.save(buf, format="PNG")
            encoded.append(buf.getvalue())
        targets = []
        if self.target is not None:
            buf = io.BytesIO()
            self.target.save(buf, format="PNG")
            targets.append(buf.getvalue())
        return {
            "__key__": self.key,
            IMAGES_MEMBER: pack_images(encoded),
            JSON_MEMBER: record_json(self.to_json()),
            TARGETS_MEMBER: pack_images(targets),
        }

    @classmethod
    def decode(cls, record: dict[str, Any], where: str = "shard") -> Sample:
        """Inverse of `encode` from raw webdataset bytes; any failure is a DataError naming shard and key."""
        here = f"{where}:{record.get('__key__', '')}"
        try:
            return cls._decode(record, here)
        except DataError:
            raise
        except (KeyError, TypeError, ValueError, OSError, SyntaxError, RecursionError) as exc:
            raise DataError(f"cannot decode record ({type(exc).__name__}: {exc})", here) from exc

    @classmethod
    def _decode(cls, record: dict[str, Any], here: str) -> Sample:
        key = str(record.get("__key__", ""))
        payload = _payload(record, here)
        fmt = payload.get("image_format", "jpg")
        if payload.get("schema_version", LEGACY_SCHEMA_VERSION) >= 2:
            for member in MEMBERS:
                if member not in record:
                    raise DataError("missing member", here, member)
            images = [_open_image(b, here, IMAGES_MEMBER) for b in unpack_images(record[IMAGES_MEMBER], here)]
            targets = unpack_images(record[TARGETS_MEMBER], here, TARGETS_MEMBER)
            if len(targets) > 1:
                raise DataError(f"holds {len(targets)} targets, at most 1", here, TARGETS_MEMBER)
            target = _open_image(targets[0], here, TARGETS_MEMBER) if targets else None
            meta_raw = payload.get("meta", "{}")
            try:
                meta = json.loads(meta_raw) if isinstance(meta_raw, str) else None
            except ValueError as exc:
                raise DataError(f"meta is not valid JSON ({exc})", here, "meta") from exc
            if not isinstance(meta, dict):
                raise DataError("meta must be a JSON object string", here, "meta")
        else:
            images = []
            for i in range(int(payload.get("images", 0))):
                name = f"{i}.{fmt}"
                if name not in record:
                    raise DataError("missing image member", here, name)
                images.append(_open_image(record[name], here, name))
            target = _open_image(record["target.png"], here, "target.png") if "target.png" in record else None
            meta = payload.get("meta", {})
        return cls(
            key=key,
            messages=payload["messages"],
            images=images,
            task=payload.get("task", ""),
            source=payload.get("source", ""),
            meta=meta,
            target=target,
            image_format=fmt,
        )
