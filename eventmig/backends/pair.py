"""A migration across stores: a source store and a target store of any kinds, seen as one store.

migrate, verify, switch and rollback work on one store with epochs. Across
stores (SQLite or PostgreSQL into EventStoreDB and back, or one cluster
into a new one), :class:`StorePair` presents the two as one: **epoch 1 is
the source store's active epoch**, read only and never written; **epochs 2
and up are the target store's own**, created, filled and switched by the
target as it does for a migration inside it. The target's first epoch must
be empty: it is what the target's applications see until the switch, and
the pair's epoch 1 stands in for it. The bookkeeping (runs, quarantine,
switches, the job lock) is the target's.

A switch checks that the source's head has not moved since verification
(migrating and verifying what arrived, if the caller asks for a catch-up),
then switches the target. Nothing holds the source's writers off across two
stores: stop them, switch, and point the applications at the target (the
connection string is the pointer). A rollback makes the target's first,
empty epoch active again: the source store is the one to use again, and it
was never written.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import msgspec

from eventmig.errors import ConfigError, HeadMoved, StoreError
from eventmig.model.events import NewEvent, RecordedEvent
from eventmig.model.records import (
    EpochInfo,
    ExpectedVersion,
    QuarantinedEvent,
    Run,
    StreamPartitions,
    StreamState,
    Switch,
    TargetEvent,
)
from eventmig.ports import CatchUp, EventStore

SOURCE_EPOCH = 1


class StorePair(EventStore):
    """The source store's active epoch as epoch 1, the target store's epochs from 2 on."""

    def __init__(self, source: EventStore, target: EventStore) -> None:
        self.source, self.target = source, target
        self._source_epoch = source.at_epoch(source.active_epoch())
        self.capabilities = msgspec.structs.replace(target.capabilities, atomic_switch=False)  # type: ignore[misc]
        self.url = f"{source.url} -> {target.url}"
        self.epoch = self.active_epoch()

    # the pair is bound to its active epoch: stream methods act on that epoch's own store handle
    def _here(self) -> EventStore:
        return self.at_epoch(self.epoch)

    def append(self, stream: str, events: Sequence[NewEvent], expected_version: ExpectedVersion = StreamState.ANY) -> int:
        if self.epoch == SOURCE_EPOCH:
            raise StoreError("a migration across stores never writes its source store")
        return self._here().append(stream, events, expected_version)

    def read_stream(self, stream: str, from_version: int | None = None, limit: int | None = None) -> list[RecordedEvent]:
        return self._here().read_stream(stream, from_version, limit)

    def read_all(self, after: int | None = None, *, until: int | None = None, batch_size: int = 1000) -> Iterator[list[RecordedEvent]]:
        return self._here().read_all(after, until=until, batch_size=batch_size)

    def read_all_rows(self, after: int | None = None, *, until: int | None = None, batch_size: int = 1000,
                      streams: StreamPartitions | None = None, types: Collection[str] | None = None,
                      lean: bool = False) -> Iterator[list[tuple[Any, ...]]]:
        return self._here().read_all_rows(after, until=until, batch_size=batch_size, streams=streams, types=types, lean=lean)

    def list_streams(self) -> Iterator[str]:
        return self._here().list_streams()

    def stream_version(self, stream: str) -> int | None:
        return self._here().stream_version(stream)

    def stream_versions(self) -> dict[str, int]:
        return self._here().stream_versions()

    def head_position(self) -> int | None:
        return self._here().head_position()

    def count_events(self, after: int | None = None, until: int | None = None) -> int:
        return self._here().count_events(after, until)

    # -------------------------------------------------------------- epochs
    def epochs(self) -> list[EpochInfo]:
        active = self.active_epoch()
        source = next(e for e in self.source.epochs() if e.epoch == self.source.active_epoch())
        first = EpochInfo(SOURCE_EPOCH, "active" if active == SOURCE_EPOCH else "retired", None, source.created_at)
        return [first, *(e for e in self.target.epochs() if e.epoch != SOURCE_EPOCH)]

    def active_epoch(self) -> int:
        return self.target.active_epoch()  # the target's empty first epoch active: the source is in use

    def at_epoch(self, epoch: int) -> EventStore:
        return self._source_epoch if epoch == SOURCE_EPOCH else self.target.at_epoch(epoch)

    def check_new_epoch(self) -> None:
        self.target.check_new_epoch()
        held = self.target.at_epoch(SOURCE_EPOCH).count_events()
        if held:
            raise ConfigError(f"the target store {self.target.url} already holds {held} event(s) in its active epoch; "
                              "a migration across stores needs an empty target")

    def create_epoch(self, source_epoch: int) -> int:
        if source_epoch != SOURCE_EPOCH:
            raise StoreError(f"a migration across stores copies epoch {SOURCE_EPOCH} (the source store), not {source_epoch}")
        self.check_new_epoch()
        return self.target.create_epoch(SOURCE_EPOCH)

    def finish_epoch(self, epoch: int) -> None:
        """Finish the target's epoch, giving its streams the source streams' own settings where both
        stores have them (retention and ACLs from one cluster to another)."""
        self.target.finish_epoch(epoch)
        if self.source.capabilities.stream_metadata and self.target.capabilities.stream_metadata:
            self.target.at_epoch(epoch).apply_stream_settings(self._source_epoch.stream_settings())

    def drop_epoch(self, epoch: int) -> None:
        if epoch == SOURCE_EPOCH:
            raise StoreError("epoch 1 is the source store, which a migration across stores never writes")
        self.target.drop_epoch(epoch)

    def switch_epoch(self, to_epoch: int, *, kind: str, expect_heads: dict[int, int | None],
                     catch_up: CatchUp | None = None) -> Switch:
        """Check the source's head (catching up if asked), then switch the target."""
        caught_up = False
        if SOURCE_EPOCH in expect_heads and to_epoch != SOURCE_EPOCH:
            expected = expect_heads[SOURCE_EPOCH]
            head = self._source_epoch.head_position()
            if head != expected:
                if catch_up is None or catch_up.source_epoch != SOURCE_EPOCH:
                    raise HeadMoved(f"epoch {SOURCE_EPOCH} (the source store) changed since it was verified "
                                    f"(head {expected} -> {head}): stop its writers, migrate again, then switch")
                target_head = self.target.at_epoch(to_epoch).head_position()
                if to_epoch in expect_heads and target_head != expect_heads[to_epoch]:
                    raise HeadMoved(f"epoch {to_epoch} changed since it was verified "
                                    f"(head {expect_heads[to_epoch]} -> {target_head}); verify again, then switch")
                self._catch_up(catch_up, expected, to_epoch, target_head)
                caught_up = True
        on_target = {e: h for e, h in expect_heads.items() if e != SOURCE_EPOCH}
        if caught_up:  # the catch-up moved the target's head itself, and verified what it wrote
            on_target[to_epoch] = self.target.at_epoch(to_epoch).head_position()
        flip = self.target.switch_epoch(to_epoch, kind=kind, expect_heads=on_target)
        self.epoch = self.active_epoch()
        return flip

    def _catch_up(self, catch_up: CatchUp, source_head: int | None, to_epoch: int, target_head: int | None) -> None:
        target = self.target.at_epoch(to_epoch)
        rows = [r for b in self._source_epoch.read_all_rows(source_head, batch_size=100_000) for r in b]
        events, run = catch_up.prepare(rows)
        target.write_batch(events, run=run)
        written = [r for b in target.read_all_rows(target_head, batch_size=100_000) for r in b]
        catch_up.check(rows, written)
        if rows and self._source_epoch.head_position() != rows[-1][2]:
            raise HeadMoved(f"epoch {SOURCE_EPOCH} (the source store) is still being appended to; stop its writers, then switch")

    def switches(self) -> list[Switch]:
        return self.target.switches()

    # ------------------------------------------------ migration bookkeeping
    def lock(self, name: str, *, ttl_s: float | None = None) -> AbstractContextManager[None]:
        return self.target.lock(name, ttl_s=ttl_s)

    def save_run(self, run: Run) -> None:
        self.target.save_run(run)

    def runs(self, kind: str | None = None) -> list[Run]:
        return self.target.runs(kind)

    def write_batch(self, events: Sequence[TargetEvent], *, run: Run | None = None,
                    quarantined: Sequence[QuarantinedEvent] = ()) -> None:
        if self.epoch == SOURCE_EPOCH:
            raise StoreError("a migration across stores never writes its source store")
        self._here().write_batch(events, run=run, quarantined=quarantined)

    def quarantine(self, run_id: str | None = None) -> list[QuarantinedEvent]:
        return self.target.quarantine(run_id)

    def accept_quarantine(self, run_id: str, ids: Sequence[int] | None = None) -> int:
        return self.target.accept_quarantine(run_id, ids)

    def close(self) -> None:
        try:
            self.source.close()
        finally:
            self.target.close()


def open_pair(source_url: str, target_url: str, *, table: str = "events", read_only: bool = False) -> StorePair:
    """Open ``source_url`` read-only and ``target_url`` (created unless ``read_only``) as a :class:`StorePair`."""
    from eventmig.backends import open_store

    if source_url == target_url:
        raise ConfigError("the target store is the source store: leave target unset to migrate inside one store")
    source = open_store(source_url, table=table, create=False, read_only=True)
    try:
        target = open_store(target_url, table=table, create=not read_only, read_only=read_only)
    except BaseException:
        source.close()
        raise
    return StorePair(source, target)
