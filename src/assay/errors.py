"""Exception tree for Assay.

    AssayError                 base of everything Assay raises on purpose
    └── UserError              bad input: a file, a flag, a dataset, a model the user gave us
                               (carries what went wrong, where, and how to fix it; the CLI exits 2)

Anything else escaping the library is a bug (the CLI exits 1).
"""

from __future__ import annotations

__all__ = ["AssayError", "UserError"]


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
