"""Parameter validation at the library boundary: a public function's arguments are checked against its
annotations before it runs, and a bad one is an :class:`~assay.errors.OptionError` naming the Python
parameter (the CLI turns parameter names into its flags in one place)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from assay.errors import OptionError

__all__ = ["validated_call"]

T = TypeVar("T")


@functools.lru_cache(maxsize=None)
def _validator(fn: Callable[..., T]) -> Callable[..., T]:
    from pydantic import ConfigDict, validate_call

    return validate_call(fn, config=ConfigDict(arbitrary_types_allowed=True))


def validated_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with its parameters validated against its annotations first (pydantic's
    ``validate_call``); a bad one is an OptionError whose ``where`` is the parameter's name."""
    from pydantic import ValidationError

    try:
        return _validator(fn)(*args, **kwargs)
    except ValidationError as exc:
        if exc.title != fn.__name__:  # raised inside the function, not by the argument check
            raise
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else fn.__name__
        if name.isdigit():  # a positional argument: name it
            import inspect

            params = list(inspect.signature(fn).parameters)
            name = params[int(name)] if int(name) < len(params) else name
        raise OptionError(f"{fn.__name__}(): invalid {name}: {first['msg']}", where=name,
                          fix=f"see help(assay.{fn.__name__}) for what {name} accepts") from None
