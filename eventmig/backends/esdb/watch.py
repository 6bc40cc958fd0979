"""Waking a follower when events are appended to the cluster: a catch-up subscription to ``$all``.

``eventmig follow`` reads from its checkpoint (a commit position, exclusive:
:func:`~eventmig.backends.esdb.reading.epoch_events` skips the event at it),
applies, then waits. On PostgreSQL it waits on ``LISTEN``; here a catch-up
subscription to ``$all``, started at the epoch's head position (a
subscription excludes its start, as a resumed read must), runs in a thread
of its own and marks each event it receives. The follower's wait returns as
soon as one arrives, and reads from its checkpoint again, so an event it is
told about is never lost or applied twice: the subscription only wakes, the
checkpoint decides what is read. Events of other streams (another epoch,
eventmig's own bookkeeping such as a switch) wake it too, which costs one
read that finds nothing, or finds that the active epoch changed.

If the subscription fails (the node went away), waiting falls back to
sleeping, as a store that announces nothing does, and the next wait
subscribes again.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class AppendWatch:
    """A subscription to ``$all`` from a commit position, and a flag each received event raises."""

    def __init__(self, client: Any, start: int | None) -> None:
        """``start``: the commit position to subscribe after; None: from the end of ``$all``."""
        self._appended = threading.Event()
        self.failed = False
        if start is None:
            self._subscription = client.subscribe_to_all(from_end=True)
        else:
            self._subscription = client.subscribe_to_all(commit_position=start)
        self._thread = threading.Thread(target=self._run, name="eventmig-esdb-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for _ in self._subscription:
                self._appended.set()
        except Exception:  # noqa: BLE001 - stopped, or the node went away: either way, stop waking
            pass
        self.failed = True
        self._appended.set()  # whoever waits reads now, and the next wait subscribes again

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for an appended event; True when one arrived since the last wait."""
        if self.failed:
            time.sleep(timeout)
            return False
        woke = self._appended.wait(timeout)
        self._appended.clear()
        return woke and not self.failed

    def close(self) -> None:
        self.failed = True
        try:
            self._subscription.stop()
        except Exception:  # noqa: BLE001 - already ended
            pass
        self._thread.join(timeout=5)
