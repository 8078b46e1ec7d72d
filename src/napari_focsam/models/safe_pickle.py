"""The unpickling policy for checkpoints that hold pickled training objects.

Training frameworks (mmengine for FocSAM, torch_em for micro-sam) save their own objects next
to the weights. Such a file is read without importing or running any of their code:

1. every global its pickle refers to is listed from the pickle's opcodes
   (:func:`pickle_globals`), before anything is unpickled;
2. :func:`resolve_globals` sorts them: names ``torch.load(weights_only=True)`` allows by
   default, the numpy names needed for arrays, scalars and dtypes (:data:`NUMPY_GLOBALS`), and
   names under a *stubbed package*, bound to an inert stand-in class (:class:`InertStub`)
   that only records the pickled arguments and state; anything else is forbidden;
3. the caller then reads the file with ``torch.load(weights_only=True)`` under
   ``torch.serialization.safe_globals`` of just the allowed extras, so torch's restricted
   unpickler checks every global again while loading.

The file-level reading (zip and legacy torch files, error messages) is
`napari_focsam.models.checkpoint.load_torch_file`.
"""

from __future__ import annotations

import logging
import pickletools
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections.abc import Callable, Iterable
from typing import IO, Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "NUMPY_GLOBALS",
    "UNRESOLVED_GLOBAL",
    "InertStub",
    "pickle_globals",
    "resolve_globals",
    "stub_class",
]

#: Stands for a STACK_GLOBAL whose module or name is not a string the scanner could follow.
UNRESOLVED_GLOBAL = "<STACK_GLOBAL not resolvable statically>"


def _numpy_globals() -> dict[str, Any]:
    try:
        from numpy._core import multiarray  # numpy >= 2 (and 1.26's forward shim)
    except ImportError:  # pragma: no cover - numpy < 1.26
        from numpy.core import multiarray
    reconstruct, scalar = multiarray._reconstruct, multiarray.scalar
    return {
        "numpy.ndarray": np.ndarray,
        "numpy.dtype": np.dtype,
        # numpy 1.x writes numpy.core.*, numpy 2 numpy._core.*; both name the same functions.
        "numpy.core.multiarray._reconstruct": reconstruct,
        "numpy._core.multiarray._reconstruct": reconstruct,
        "numpy.core.multiarray.scalar": scalar,
        "numpy._core.multiarray.scalar": scalar,
    }


def _numpy_dtype_classes() -> dict[str, type]:
    # numpy >= 1.25 makes each dtype an instance of a numpy.dtypes class, which torch must be
    # allowed to BUILD (set the pickled dtype state on); older numpy has no such module.
    module = getattr(np, "dtypes", None)
    return {
        f"numpy.dtypes.{name}": cls for name, cls in vars(module or object).items()
        if isinstance(cls, type) and issubclass(cls, np.dtype) and cls is not np.dtype
    }


#: Numpy globals allowed in a checkpoint (arrays, scalars, dtypes), by pickled name.
NUMPY_GLOBALS: dict[str, Any] = _numpy_globals()
#: Classes of numpy dtype instances, allowed (by class, not as globals) when numpy is present.
_NUMPY_DTYPE_CLASSES: dict[str, type] = _numpy_dtype_classes()


class InertStub:
    """Inert stand-in for a pickled object of a stubbed package (or the result of a call).

    Subclasses named like the original (``__module__``, ``__qualname__``) are made per file
    by :func:`stub_class`; they accept any constructor arguments and state and keep them as
    plain data, running none of the original code.

    Attributes
    ----------
    pickled_args : tuple
        Arguments given to the class when unpickling.
    pickled_state : object
        State given to ``__setstate__`` (usually the original ``__dict__``), or None.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> InertStub:
        obj = super().__new__(cls)
        obj.__dict__.update(pickled_args=args, pickled_state=None)
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["pickled_state"] = state

    def __repr__(self) -> str:
        return f"<inert stand-in for {type(self).__module__}.{type(self).__qualname__}>"


def stub_class(full_name: str) -> type[InertStub]:
    """A new :class:`InertStub` subclass named like ``full_name`` (``"pkg.module.Name"``)."""
    module, _, name = full_name.rpartition(".")
    return type(name, (InertStub,), {"__module__": module, "__qualname__": name,
                                     "__doc__": f"Inert stand-in for {full_name}."})


def _torch_default_globals() -> set[str] | None:
    """Names ``torch.load(weights_only=True)`` allows by default, or None if torch hides them."""
    try:
        from torch import _weights_only_unpickler

        return set(_weights_only_unpickler._get_allowed_globals())
    except (ImportError, AttributeError):  # private API moved: torch's own check still applies
        logger.warning("cannot list torch's weights_only allowlist; relying on torch.load's check")
        return None


def _global_name(module: str, name: str) -> str:
    # Same Python 2 name fixes as torch's weights_only unpickler.
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


def pickle_globals(stream: IO[bytes], found: set[str]) -> None:
    """Add to `found` every global referenced by the next pickle in `stream`.

    Reads opcodes up to the pickle's STOP; nothing is imported or called. A STACK_GLOBAL whose
    module and name are not plain strings pushed (or memoised) just before is recorded as
    :data:`UNRESOLVED_GLOBAL`, which no policy allows.

    Raises
    ------
    Exception
        Whatever `pickletools.genops` raises on malformed or truncated bytes.
    """
    recent: list[str | None] = []  # strings pushed by the latest opcodes (None: anything else)
    memo: dict[int, str | None] = {}
    for op, arg, _ in pickletools.genops(stream):
        kind = op.name
        if kind == "GLOBAL":
            module, name = str(arg).split(" ", 1)
            found.add(_global_name(module, name))
            recent.append(None)
        elif kind == "STACK_GLOBAL":
            module, name = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
            found.add(_global_name(module, name) if module and name else UNRESOLVED_GLOBAL)
            recent.append(None)
        elif kind in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            recent.append(str(arg))
        elif kind == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif kind in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = recent[-1] if recent else None
        elif kind in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(int(arg)))
        elif kind != "FRAME":
            recent.append(None)
        del recent[:-2]


def _in_packages(name: str, packages: Iterable[str]) -> bool:
    return any(name.startswith(package + ".") for package in packages)


def resolve_globals(
    found: Iterable[str], stubbed_packages: tuple[str, ...]
) -> tuple[list[tuple[Callable[..., Any], str]], list[str]]:
    """Sort the globals of a pickle into extra allowed objects and forbidden names.

    Parameters
    ----------
    found : iterable of str
        Globals from :func:`pickle_globals` (``"module.Name"``).
    stubbed_packages : tuple of str
        Top-level packages whose names become :class:`InertStub` subclasses.

    Returns
    -------
    allowed : list of (object, str)
        ``(object, pickled name)`` pairs to pass to ``torch.serialization.safe_globals``:
        numpy functions and types, and new stand-in classes (torch's default allowlist is not
        repeated).
    forbidden : list of str
        Sorted names no rule allows (empty when the file may be loaded). When torch's default
        allowlist cannot be listed, only names torch itself will check again are let through.
    """
    torch_defaults = _torch_default_globals()
    allowed: list[tuple[Callable[..., Any], str]] = []
    forbidden: list[str] = []
    for name in sorted(set(found)):
        if name in NUMPY_GLOBALS:
            allowed.append((NUMPY_GLOBALS[name], name))
        elif _in_packages(name, stubbed_packages):
            allowed.append((stub_class(name), name))
        elif torch_defaults is not None and name not in torch_defaults:
            forbidden.append(name)
    if any(name == "numpy.dtype" for _, name in allowed):
        allowed.extend((cls, name) for name, cls in _NUMPY_DTYPE_CLASSES.items())
    return allowed, forbidden
