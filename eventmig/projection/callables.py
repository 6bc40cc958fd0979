"""What eventmig learns about a service's handlers and types by looking at them.

Handlers are plain callables of one to three parameters, keyed by a field or a
function; these helpers read a callable's arity and code and name types in
fingerprints and messages, the same way for declaring and for binding.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import msgspec


def code_of(fn: Any) -> Any:
    """The code object a callable runs: a function's, a bound method's, a partial's or a callable instance's."""
    for candidate in (fn, getattr(fn, "__func__", None), getattr(fn, "func", None), getattr(type(fn), "__call__", None)):
        code = getattr(candidate, "__code__", None)
        if code is not None:
            return code
    return None


def dict_key(field: str) -> Callable[[Any], Any]:
    def key(event: Any) -> Any:
        return event.get(field) if isinstance(event, dict) else getattr(event, field, None)

    return key


def arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 3
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)


def type_label(event_type: Any) -> str:
    return event_type if isinstance(event_type, str) else getattr(event_type, "__qualname__", repr(event_type))


def state_label(state_type: Any) -> str:
    if isinstance(state_type, type) and issubclass(state_type, msgspec.Struct):
        return f"{state_type.__qualname__}({','.join(state_type.__struct_fields__)})"
    return repr(state_type)
