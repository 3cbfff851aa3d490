"""Load `.npy` files that hold pickled Python objects without trusting them.

Several datasets (CALVIN's `scene_info.npy` and `auto_lang_ann.npy`) store dicts with `np.save`,
which pickles them. `np.load(allow_pickle=True)` would run whatever the pickle asks for; here the
unpickler admits only numpy arrays, dtypes and scalars and plain builtin containers and values, so
a file asking for anything else (`os.system`, a custom class) is refused before any call is made.
"""

from __future__ import annotations

import importlib
import io
import pickle
import tokenize
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.errors import DataError

# What numpy's .npy header parser raises on a malformed header (it tokenizes the header as Python literals).
NPY_HEADER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError)

# Builtins a data pickle may name: containers and plain values, nothing that calls or imports.
_BUILTINS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "int", "float", "complex", "bool", "slice", "range"}
)

# numpy globals an array/dtype/scalar pickle names, by the module that holds them on numpy 2 and 1.
_NUMPY: dict[tuple[str, str], tuple[str, ...]] = {
    ("numpy", "ndarray"): ("numpy",),
    ("numpy", "dtype"): ("numpy",),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "numpy.core.numeric"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "numpy.core.numeric"),
}


def _lookup(module: str, name: str) -> Any:
    """module.name, or None when this numpy has no such module or attribute."""
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def _numpy_global(module: str, name: str) -> Any:
    """The numpy object a pickle names, looked up where this numpy version keeps it."""
    for candidate in _NUMPY[(module, name)]:
        found = _lookup(candidate, name)
        if found is not None:
            return found
    raise pickle.UnpicklingError(f"{module}.{name} not found in this numpy")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose `find_class` admits only numpy array machinery and builtin data types."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed global; refuse every other one (before anything is called)."""
        if module == "builtins" and name in _BUILTINS:
            return getattr(__import__("builtins"), name)
        if (module, name) == ("_codecs", "encode"):  # protocol-2 pickles spell bytes this way
            import codecs

            return codecs.encode
        if (module, name) in _NUMPY:
            return _numpy_global(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays and builtins are allowed")

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids reference outside objects: never allowed in a data file."""
        raise pickle.UnpicklingError("refusing a persistent id")


def safe_loads(data: bytes, where: str | Path = "<bytes>") -> Any:
    """Unpickle `data` with the restricted unpickler; DataError naming `where` when refused or broken."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (
        pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
        OverflowError, MemoryError, RecursionError,
    ) as exc:  # fmt: skip
        raise DataError(f"cannot unpickle ({type(exc).__name__}: {exc})", where) from exc


def read_header(fp: Any, path: str | Path) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Shape, Fortran order and dtype from the .npy header at `fp` (numpy's parser, which never unpickles)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            return fmt.read_array_header_1_0(fp)
        if version in ((2, 0), (3, 0)):
            # 3.0 only differs by allowing utf-8 in the header; object-array headers are ascii.
            return fmt.read_array_header_2_0(fp)
    except NPY_HEADER_ERRORS as exc:
        raise DataError(f"not a valid .npy file ({exc})", path) from exc
    raise DataError(f"unsupported .npy format version {version}", path)


def load_npy(path: str | Path) -> np.ndarray:
    """Read an .npy file; object arrays (pickles) go through the restricted unpickler."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path)
    with path.open("rb") as fp:
        _shape, _fortran, dtype = read_header(fp, path)
        if not dtype.hasobject:
            fp.seek(0)
            try:
                return np.lib.format.read_array(fp, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise DataError(f"cannot read array ({exc})", path) from exc
        payload = fp.read()
    array = safe_loads(payload, path)
    if not isinstance(array, np.ndarray):
        raise DataError(f"pickle holds a {type(array).__name__}, expected an array", path)
    return array


def load_npy_object(path: str | Path) -> Any:
    """Read an .npy file written by `np.save(path, obj)` of a Python object; return that object."""
    array = load_npy(path)
    if array.dtype.hasobject and array.ndim == 0:
        return array.item()
    return array
