"""Load `.npy` files that hold pickled Python objects without trusting them.

Several datasets (CALVIN's `scene_info.npy` and `auto_lang_ann.npy`) store dicts with `np.save`,
which pickles them. `np.load(allow_pickle=True)` would run whatever the pickle asks for; here the
unpickler admits only numpy arrays, dtypes and scalars and plain builtin containers and values, so
a file asking for anything else (`os.system`, a custom class) is refused before any call is made.
"""

from __future__ import annotations

import _compat_pickle
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


def _fresh_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype[Any]:
    """`numpy.dtype` always as a new object, so that a pickle's BUILD step (`__setstate__`, which numpy does not
    validate fully) only ever changes this copy, never one of numpy's shared dtype instances."""
    del copy
    return np.dtype(spec, bool(align), True)


_MATERIALIZED = (list, tuple, set, frozenset, dict, str, bytes, bytearray)


def _guarded_builtin(name: str) -> Any:
    """The builtin `name`, refusing the calls that make a pickle allocate more than it holds: a container from a
    lazy iterable (`list(range(10**10))`) or bytes of a given length (`bytes(10**10)`)."""
    real = getattr(__import__("builtins"), name)
    if name in ("list", "tuple", "set", "frozenset", "dict", "bytes", "bytearray"):

        def build(*args: Any) -> Any:
            if any(not isinstance(a, _MATERIALIZED) for a in args[:1]):
                raise pickle.UnpicklingError(f"refusing {name}() of a {type(args[0]).__name__}")
            return real(*args)

        return build
    return real


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose `find_class` admits only numpy array machinery and builtin data types.

    Arrays are bounded by the payload: one cannot hold more elements than the pickle has bytes (each element's
    value, or an opcode naming it, is in the payload), so a forged shape cannot make the loader allocate gigabytes.
    """

    def __init__(self, file: Any, *, max_elements: int, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.max_elements = max_elements

    def _check_shape(self, shape: Any) -> None:
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        count = 1
        for dim in dims:
            if not isinstance(dim, int | np.integer) or dim < 0:
                raise pickle.UnpicklingError(f"bad array shape {shape!r}")
            count *= int(dim)
        if count > self.max_elements:
            raise pickle.UnpicklingError(f"array shape {shape!r} holds more elements than the pickle has bytes")

    def _array_class(self) -> Any:
        """`numpy.ndarray` as a pickle may call it: shape checked first."""
        check = self._check_shape

        class _CheckedArray(np.ndarray):
            def __new__(cls, shape: Any, *args: Any, **kwargs: Any) -> Any:  # a plain ndarray, not this class
                check(shape)
                return np.ndarray(shape, *args, **kwargs)

        return _CheckedArray

    def _reconstruct(self, real: Any) -> Any:
        """numpy's `_reconstruct(subtype, shape, dtype)` with the shape checked and only plain arrays made."""
        check = self._check_shape

        def reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
            if not (isinstance(subtype, type) and issubclass(subtype, np.ndarray)):
                raise pickle.UnpicklingError(f"refusing to reconstruct a {subtype!r}")
            check(shape)
            return real(np.ndarray, shape, dtype)

        return reconstruct

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed global; refuse every other one (before anything is called)."""
        # names as Python 2 wrote them into protocol 0-2 pickles (`__builtin__.xrange`), as pickle itself maps them
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if module == "builtins" and name in _BUILTINS:
            return _guarded_builtin(name)
        if (module, name) == ("_codecs", "encode"):  # protocol-2 pickles spell bytes this way
            import codecs

            def encode(text: Any, encoding: str = "utf-8") -> bytes:
                if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
                    raise pickle.UnpicklingError(f"refusing _codecs.encode to {encoding!r}")
                return codecs.encode(text, encoding)

            return encode
        if (module, name) in _NUMPY:
            found = _numpy_global(module, name)
            if name == "ndarray":
                return self._array_class()
            if name == "_reconstruct":
                return self._reconstruct(found)
            if name == "dtype":
                return _fresh_dtype
            return found
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays and builtins are allowed")

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids reference outside objects: never allowed in a data file."""
        raise pickle.UnpicklingError("refusing a persistent id")


def safe_loads(data: bytes, where: str | Path = "<bytes>") -> Any:
    """Unpickle `data` with the restricted unpickler; DataError naming `where` when refused or broken."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), max_elements=len(data), encoding="latin1").load()
    except (
        pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
        OverflowError, MemoryError, RecursionError,
        SystemError,  # numpy's dtype.__setstate__ on some malformed states
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
