"""Server-side ``$all`` filters: by event type or by stream name, as a regex or as prefixes.

The server matches a regex anywhere in the name (.NET's ``Regex.IsMatch``,
here :func:`re.search`), which is why clients anchor their patterns
(``^(?!(\\$.+$|PersistentConfig\\d+$))`` is the default 'no system events'
filter). Prefixes, when given, win over the regex. A filter also decides
whether a subscription sends checkpoints: only filtered ones do, every
``max`` x ``checkpointIntervalMultiplier`` records considered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .store import Record


_DEFAULT_SEARCH_WINDOW = 32  # the server's read batch, used when the client leaves the window to it


def accept_everything(record: Record) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Filter:
    accept: Callable[[Record], bool]
    checkpoint_interval: int | None  # records considered between checkpoints; None: no checkpoints


def filter_from(options: object) -> Filter:
    """The filter of a ``ReadReq.Options`` (``no_filter`` accepts every record)."""
    if options.WhichOneof("filter_option") != "filter":  # type: ignore[attr-defined]
        return Filter(accept_everything, None)
    spec = options.filter  # type: ignore[attr-defined]
    by_stream = spec.WhichOneof("filter") == "stream_identifier"
    expression = spec.stream_identifier if by_stream else spec.event_type
    name: Callable[[Record], str] = (lambda r: r.stream) if by_stream else (lambda r: r.type)
    prefixes = tuple(expression.prefix)
    if prefixes:
        accept: Callable[[Record], bool] = lambda r: name(r).startswith(prefixes)  # noqa: E731
    else:
        pattern = re.compile(expression.regex)
        accept = lambda r: pattern.search(name(r)) is not None  # noqa: E731
    window = spec.max if spec.WhichOneof("window") == "max" and spec.max > 0 else _DEFAULT_SEARCH_WINDOW
    interval = window * max(1, spec.checkpointIntervalMultiplier)
    return Filter(accept, interval)
