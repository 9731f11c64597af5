"""Exception tree for Assay.

    AssayError                 base of everything Assay raises on purpose
    └── UserError              bad input: a file, a flag, a dataset, a model the user gave us
        │                      (carries what went wrong, where, and how to fix it; the CLI exits 2)
        ├── DataError          a data set that cannot be read or does not fit the model
        ├── ModelError         a model file or factory that cannot be loaded or run
        │   └── UnsafeModelError   a model file that would run code (pickle, sympy strings, native code)
        ├── PolicyError        a gate policy or constraint that cannot be parsed
        ├── OptionError        a command-line option / keyword argument out of range
        ├── OutputError        an output path Assay must not write (a user folder, an input, a file)
        └── RegistryError      a model registry that cannot be opened or used, or an unknown name/version/alias
            └── RegistryConflictError   an alias moved by someone else first (compare-and-swap lost)

Anything else escaping the library is a bug (the CLI exits 1). Every leaf is a ``UserError``, so code
that only needs "bad input or not" catches ``UserError``.
"""

from __future__ import annotations

__all__ = [
    "AssayError",
    "DataError",
    "ModelError",
    "OptionError",
    "OutputError",
    "PolicyError",
    "RegistryConflictError",
    "RegistryError",
    "UnsafeModelError",
    "UserError",
]


class AssayError(Exception):
    """Base class for errors Assay raises deliberately."""


class UserError(AssayError):
    """Bad input from the user: says what went wrong, where, and how to fix it."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = [self.what.rstrip(".") + "."]
        if self.where:
            parts.append(f"Where: {self.where}.")
        if self.fix:
            parts.append(f"Fix: {self.fix.rstrip('.')}.")
        return " ".join(parts)


class DataError(UserError):
    """A data set that cannot be read, is malformed, or does not fit the model."""


class ModelError(UserError):
    """A model file or factory that cannot be loaded or run."""


class UnsafeModelError(ModelError):
    """A model file that would execute code when loaded (pickle, expression strings, native libraries)."""


class PolicyError(UserError):
    """A gate policy or selection constraint that cannot be parsed or is out of range."""


class OptionError(UserError):
    """An option (CLI flag or keyword argument) with a value Assay cannot use."""


class OutputError(UserError):
    """An output path Assay refuses to write: a folder it did not write, an input, or a path below a file."""


class RegistryError(UserError):
    """A model registry that cannot be opened or written (not a registry, corrupted, unreachable, read-only),
    or a name, version or alias it does not hold."""


class RegistryConflictError(RegistryError):
    """A compare-and-swap alias move that lost: the alias is no longer held by the version the caller expected.
    ``holder`` is the version that holds it now (None: the alias does not exist)."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None,
                 holder: int | None = None) -> None:
        super().__init__(what, where=where, fix=fix)
        self.holder = holder
