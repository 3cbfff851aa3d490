"""`Sample`: one shard record (a chat-format training example with its images and provenance).

On disk (webdataset): `{key}.{i}.jpg|png` per image, `{key}.json` with `messages`, `task`,
`source`, `meta` and `images` (count), and optionally `{key}.target.png` for generation targets.
No pickle anywhere. `meta` holds the facts the answer came from so that `verify` can re-check it.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

from datasets_build.errors import DataError

SCHEMA_VERSION = 1
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
        """The `{key}.json` payload."""
        return {
            "schema_version": SCHEMA_VERSION,
            "messages": self.messages,
            "task": self.task,
            "source": self.source,
            "meta": self.meta,
            "images": len(self.images),
            "image_format": self.image_format,
            "has_target": self.target is not None,
        }

    def encode(self, jpeg_quality: int = 95) -> dict[str, Any]:
        """Encode into a webdataset record: {"__key__": key, "json": bytes, "0.jpg": bytes, ...}."""
        record: dict[str, Any] = {
            "__key__": self.key,
            "json": json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True).encode(),
        }
        for i, image in enumerate(self.images):
            buf = io.BytesIO()
            if self.image_format == "jpg":
                image.convert("RGB").save(buf, format="JPEG", quality=jpeg_quality)
            else:
                image.save(buf, format="PNG")
            record[f"{i}.{self.image_format}"] = buf.getvalue()
        if self.target is not None:
            buf = io.BytesIO()
            self.target.save(buf, format="PNG")
            record["target.png"] = buf.getvalue()
        return record

    @classmethod
    def decode(cls, record: dict[str, Any], where: str = "shard") -> Sample:
        """Inverse of `encode` from raw webdataset bytes; any failure is a DataError naming shard and key."""
        here = f"{where}:{record.get('__key__', '')}"
        try:
            return cls._decode(record, here)
        except DataError:
            raise
        except (KeyError, TypeError, ValueError, OSError, SyntaxError) as exc:
            raise DataError(f"cannot decode record ({type(exc).__name__}: {exc})", here) from exc

    @classmethod
    def _decode(cls, record: dict[str, Any], here: str) -> Sample:
        key = str(record.get("__key__", ""))
        if "json" not in record:
            raise DataError("record has no .json member", here, "json")
        try:
            payload = json.loads(record["json"])
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"invalid JSON ({exc})", here, "json") from exc
        fmt = payload.get("image_format", "jpg")
        images: list[Image.Image] = []
        for i in range(int(payload.get("images", 0))):
            name = f"{i}.{fmt}"
            if name not in record:
                raise DataError("missing image member", here, name)
            image = Image.open(io.BytesIO(record[name]))
            image.load()
            images.append(image)
        target = None
        if "target.png" in record:
            target = Image.open(io.BytesIO(record["target.png"]))
            target.load()
        return cls(
            key=key,
            messages=payload["messages"],
            images=images,
            task=payload.get("task", ""),
            source=payload.get("source", ""),
            meta=payload.get("meta", {}),
            target=target,
            image_format=fmt,
        )
