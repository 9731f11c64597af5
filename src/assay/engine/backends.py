"""Execution backends: where batches of forward passes run. Local now; Ray plugs in here later."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["Backend", "LocalBackend", "get_backend"]

T = TypeVar("T")
R = TypeVar("R")


class Backend(ABC):
    """Maps a function over work items, yielding results in order."""

    name: str

    @abstractmethod
    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]: ...


class LocalBackend(Backend):
    """In-process, sequential: the model's runtime already uses the machine's threads."""

    name = "local"

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        for item in items:
            yield fn(item)


def get_backend(name: str) -> Backend:
    from assay.errors import UserError

    if name == "local":
        return LocalBackend()
    raise UserError(f"unknown backend {name!r}", where="backend", fix="use 'local' (Ray support is planned)")
