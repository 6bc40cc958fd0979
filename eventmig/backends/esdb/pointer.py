"""The helper service code resolves stream names through, when epochs share one cluster.

After a switch on one cluster, epoch 2's streams are ``e2.<name>``: an
application that keeps writing ``order-1`` writes to the retired epoch.
:class:`EpochPointer` reads the active epoch from eventmig's pointer
(``$eventmig-epochs``, written with an expected revision by each switch and
rollback) and gives the name to use::

    pointer = EpochPointer(client)                  # the application's own KurrentDBClient
    client.append_to_stream(pointer.stream("order-1"), current_version=..., events=[...])

It caches the pointer for ``refresh_seconds``; :meth:`EpochPointer.refresh`
re-reads it at once (call it when an append fails with a wrong expected
version, which is what a write racing a switch sees on the new epoch's
stream). It needs only the client, not eventmig's store.
"""

from __future__ import annotations

import time
from typing import Any

from .ledger import Ledger
from .names import EpochNames, plain


class EpochPointer:
    """The active epoch of a cluster, and stream names in it."""

    def __init__(self, client: Any, refresh_seconds: float = 5.0) -> None:
        self.client, self.refresh_seconds = client, refresh_seconds
        self._names, self._read_at = plain(), float("-inf")

    def epoch(self) -> int:
        """The active epoch (1 on a cluster eventmig never switched)."""
        return self._current().epoch

    def _current(self) -> EpochNames:
        if time.monotonic() - self._read_at >= self.refresh_seconds:
            self.refresh()
        return self._names

    def refresh(self) -> int:
        self._names = Ledger(self.client).active_names()
        self._read_at = time.monotonic()
        return self._names.epoch

    def stream(self, name: str) -> str:
        """The server's name of stream ``name`` in the active epoch."""
        return self._current().physical(name)
