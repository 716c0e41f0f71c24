"""Read a pickle someone handed us without running it: only the globals a caller names can be loaded.

``pickle.load`` calls whatever a file names (``os.system`` included) while it reads, before any check on
the result can run. ``RestrictedUnpickler`` looks every global up in an allow-list first and refuses the
rest with a ``TuneTLError`` naming the file, so a crafted file fails to load instead of running code.
Plain containers (dict, list, tuple, bytes, str, int, float) need no global and always load.

    >>> batch = load_restricted(Path("cifar-10-batches-py/data_batch_1"), CIFAR_GLOBALS)  # doctest: +SKIP
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from tune_tl.errors import TuneTLError

#: What a CIFAR batch (torchvision's format, written by Python 2 or 3) needs: numpy's array reconstruction
#: under numpy 1 and 2 names, and the builtins a Python 3 pickle may name for bytes and containers.
CIFAR_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol 2 writes Python 3 bytes (torch's weights_only loader allows it too)
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "bytes"), ("builtins", "str"), ("builtins", "int"),
    ("__builtin__", "dict"), ("__builtin__", "list"), ("__builtin__", "str"), ("__builtin__", "int"),
})


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that loads only the ``(module, name)`` globals in ``allowed``."""

    def __init__(self, file, allowed: frozenset[tuple[str, str]], source: str, **kwargs: Any):
        super().__init__(file, **kwargs)
        self.allowed, self.source = allowed, source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise TuneTLError(f"{self.source}: refused to unpickle it: it names {module}.{name}, which a data file never "
                              "holds (a pickle can run code while it loads); use a trusted copy of the data")
        return super().find_class(module, name)


def load_restricted(path: Path, allowed: frozenset[tuple[str, str]], what: str = "it as a pickle", encoding: str = "latin1") -> Any:
    """The object pickled in ``path``, built from plain values and ``allowed`` globals only.

    ``what`` names the file's kind in the error when it is no pickle at all; ``encoding`` decodes Python 2
    ``str`` values (``latin1`` keeps their bytes, as torchvision reads CIFAR).

    Raises:
        TuneTLError: The file cannot be read, is no pickle, or names a global outside ``allowed``.
    """
    try:
        with open(path, "rb") as fh:
            return RestrictedUnpickler(fh, allowed, str(path), encoding=encoding).load()
    except TuneTLError:
        raise
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, RecursionError) as exc:
        raise TuneTLError(f"{path}: cannot read {what}: {exc}") from None
