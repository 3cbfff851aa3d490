"""The policy server's wire format: openpi's msgpack-numpy messages, so `openpi_client` talks to `vla serve` unmodified.

A numpy array travels as a msgpack map `{b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype.str,
b"shape": shape}`, a numpy scalar as `{b"__npgeneric__": True, b"data": item, b"dtype": dtype.str}`; no pickle,
so object, void and complex dtypes are refused both ways. Requests are maps {"image": uint8 (H, W, 3), "prompt": str}
(openpi's `infer`); replies {"actions": float32 (chunk, 7), "server_timing": {...}}; an error is a text frame.
Imports only numpy and msgpack: simulator workers use it in environments without torch.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

IMAGE_KEY = "image"
IMAGES_KEY = "images"  # several cameras, for policies trained on more than one view
PROMPT_KEY = "prompt"
ACTIONS_KEY = "actions"
TIMING_KEY = "server_timing"
RESET_KEY = "reset"  # {"reset": True}: the connection starts a new episode (the project's extension)
API_KEY_HEADER = "Authorization"  # value "Api-Key <key>", as openpi_client sends it
API_KEY_SCHEME = "Api-Key"
HEALTH_PATH = "/healthz"
_REFUSED_KINDS = ("O", "V", "c")


class WireError(ValueError):
    """A message that is not valid msgpack-numpy (bad bytes, refused dtype, data that does not fit its shape)."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.kind in _REFUSED_KINDS:
            raise WireError(f"numpy dtype {obj.dtype} cannot be sent (no pickle)")
        if isinstance(obj, np.ndarray):
            data = np.ascontiguousarray(obj)
            return {b"__ndarray__": True, b"data": data.tobytes(), b"dtype": data.dtype.str, b"shape": data.shape}
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _decode(obj: dict[Any, Any]) -> Any:
    if b"__ndarray__" in obj or b"__npgeneric__" in obj:
        try:
            dtype = np.dtype(obj[b"dtype"])
            if dtype.kind in _REFUSED_KINDS:
                raise WireError(f"numpy dtype {dtype} is refused (no pickle)")
            if b"__ndarray__" in obj:
                return np.ndarray(buffer=obj[b"data"], dtype=dtype, shape=tuple(obj[b"shape"]))
            return dtype.type(obj[b"data"])
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"malformed numpy value ({exc})") from exc
    return obj


def packb(obj: Any) -> bytes:
    """Serialise a message (dicts, lists, str, numbers, numpy arrays and scalars)."""
    return msgpack.packb(obj, default=_encode)


def unpackb(data: bytes) -> Any:
    """Deserialise a message; any malformed input raises `WireError`."""
    try:
        return msgpack.unpackb(data, object_hook=_decode)
    except WireError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise WireError(f"not a msgpack message ({type(exc).__name__}: {exc})") from exc


class _Partial:
    """A binary stream whose `read(n)` returns what has arrived (msgpack asks for 16 KiB and would wait for all)."""

    def __init__(self, stream: Any) -> None:
        self.read = getattr(stream, "read1", stream.read)


def stream_unpacker(stream: Any) -> msgpack.Unpacker:
    """An iterator of messages read from a binary file object (the worker's pipe or socket)."""
    return msgpack.Unpacker(_Partial(stream), object_hook=_decode, max_buffer_size=0)
