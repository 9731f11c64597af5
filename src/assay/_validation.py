"""Parameter validation at the library boundary: a public function's arguments are checked against its
annotations before it runs, and a bad one is an :class:`~assay.errors.OptionError` naming the Python
parameter (the CLI turns parameter names into its flags in one place)."""

from __future__ import annotations

import builtins
import functools
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from assay.errors import OptionError

__all__ = ["validated_call"]

T = TypeVar("T")


class _Namespace(Mapping[str, Any]):
    """Names an annotation may use: the function's module globals; a name imported only for type checking
    (``if TYPE_CHECKING:``) stands for ``Any``, so such a parameter is simply not checked."""

    def __init__(self, module_globals: dict[str, Any]) -> None:
        self._globals = module_globals

    def __getitem__(self, key: str) -> Any:
        if key in self._globals:
            return self._globals[key]
        if hasattr(builtins, key):
            raise KeyError(key)  # let the evaluation find the builtin itself
        return Any

    def __iter__(self) -> Iterator[str]:
        return iter(self._globals)

    def __len__(self) -> int:
        return len(self._globals)


@functools.cache
def _adapters(fn: Callable[..., Any]) -> tuple[inspect.Signature, dict[str, Any]]:
    """The function's signature and a pydantic TypeAdapter per parameter whose annotation pydantic can check
    (parameters typed with our own classes or ``Any`` are left to the function)."""
    from pydantic import ConfigDict, TypeAdapter

    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, localns=_Namespace(fn.__globals__))
    except Exception:
        hints = {}
    adapters: dict[str, Any] = {}
    for name in signature.parameters:
        hint = hints.get(name)
        if hint is None or hint is Any:
            continue
        try:
            adapter = TypeAdapter(hint, config=ConfigDict(arbitrary_types_allowed=True))
        except Exception:
            continue
        if getattr(adapter, "pydantic_complete", True):  # incomplete: refers to a type it cannot build
            adapters[name] = adapter
    return signature, adapters


def validated_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` after checking the call against ``fn``'s signature and every argument against
    its annotation (pydantic, lax mode, values passed on unchanged); an unknown or missing parameter or a bad
    value is an OptionError whose ``where`` is the parameter's name."""
    from pydantic import ValidationError

    signature, adapters = _adapters(fn)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise OptionError(f"{fn.__name__}(): {exc}", where=fn.__name__,
                          fix=f"see help(assay.{fn.__name__}) for its parameters") from None
    for name, value in bound.arguments.items():
        adapter = adapters.get(name)
        if adapter is None or signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            continue
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise OptionError(f"{fn.__name__}(): invalid {name}: {first['msg']}", where=name,
                              fix=f"see help(assay.{fn.__name__}) for what {name} accepts") from None
    return fn(*args, **kwargs)
