"""The EventStoreDB / KurrentDB event store: the store interface over kurrentdbclient.

Declared, because it differs from the SQL stores: stream versions start at
0 (the server's revisions); commit positions have gaps; a batch is appended
stream by stream (atomic per stream only), with deterministic ids and
explicit expected revisions, and the run's checkpoint saved after it; event
ids are unique per stream, not per store; a switch is a pointer flip that
cannot hold application writers off (see :meth:`ESDBEventStore.switch_epoch`).
Epochs are stream-name prefixes (:mod:`.names`); bookkeeping lives in
``$eventmig-*`` streams (:mod:`.ledger`).
"""

from __future__ import annotations

import bisect
import time
from array import array
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from eventmig.backends.switching import WAS_EMPTY, verified_heads_or_behind
from eventmig.errors import ConfigError, HeadMoved, StoreError, TransientStoreError, WrongExpectedVersion
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
from eventmig.ports import Capabilities, CatchUp, EventStore
from eventmig.urls import mask_url

from . import lease, lineage, metadata, writing
from .connection import connect
from .ledger import Ledger
from .names import EpochNames
from .positions import KEPT_AT_MOST, Positions
from .reading import Visibility, epoch_events, to_row
from .watch import AppendWatch


class ESDBEventStore(EventStore):
    """A connection to one EventStoreDB cluster, bound to one epoch (by default the active one)."""

    #: lineage is written as the server's own ``$original*`` keys and rebuilt on reading (with the epoch
    #: key added, keys reordered): the values survive, the bytes a checksum saw do not, so no lineage place
    capabilities = Capabilities(first_stream_version=0, contiguous_positions=False, atomic_batches=False,
                                unique_event_ids=False, atomic_switch=False, stream_metadata=True,
                                idempotent_appends=True, settable_record_times=False, lineage=frozenset())

    def __init__(self, url: str, *, table: str = "events", create: bool = True, read_only: bool = False,
                 epoch: int | None = None, client: Any = None, init: bool = False, layout: Any = None) -> None:
        """``table``, ``create``, ``init`` and the default ``layout`` are accepted for
        :func:`~eventmig.backends.open_store`'s sake (SQL stores' settings; a table layout other than
        eventmig's own is refused): there is no table here and nothing to create
        up front (a cluster eventmig never wrote to reads as epoch 1, its bookkeeping streams come with
        the first write). ``client``: share another handle's connection (:meth:`at_epoch`)."""
        if layout is not None and getattr(layout, "name", "eventmig") != "eventmig":
            raise ConfigError(f"layout {layout.name!r} maps a SQL events table; an EventStoreDB store has none")
        self._raw_url = url
        self.url = mask_url(url)
        self.read_only = read_only
        self._client = client if client is not None else connect(url)
        self._owns_client = client is None
        self._ledger = Ledger(self._client)
        #: the epoch this handle is bound to, or None: it follows the active one, as applications do
        self._pinned = epoch
        if epoch is None:
            names = self._call(self._ledger.active_names)
        else:
            names = self._call(lambda: self._ledger.state()[0].names(epoch))
        self._bound = _Bound(self._client, names)
        self._positions: Positions | None = None  # the last count's positions
        self._watch: AppendWatch | None = None  # what a follower waits on (wait_for_appends)

    @property
    def epoch(self) -> int:  # type: ignore[override]
        return self._here().names.epoch

    def _here(self) -> _Bound:
        """The epoch this operation works on: the pinned one, or the active one as the pointer says now.

        A handle that follows the active epoch reads the pointer (the state
        stream's last event, one small read) at each operation, so after a
        switch or a rollback its next append, read or scan lands in the
        newly active epoch; its visibility cache starts afresh when the
        epoch changes. A pinned handle (:meth:`at_epoch`) never asks.
        """
        if self._pinned is None:
            names = self._call(self._ledger.active_names)
            if names != self._bound.names:
                self._bound = _Bound(self._client, names)
        return self._bound

    def stream_settings(self) -> dict[str, dict[str, Any]]:
        """Each stream's ``$$`` metadata, without ``$tb`` (it counts this epoch's revisions only)."""
        return metadata.without_truncation(metadata.source_metadata(self._client, self._here().names))

    def apply_stream_settings(self, settings: dict[str, dict[str, Any]]) -> int:
        """Set each stream's metadata on the same stream of this epoch, where it has events.

        Whether a stream has events is asked stream by stream (one short read
        each) when few streams carry settings, as is usual; a scan of the
        epoch's names answers for all at once when many do.
        """
        self._check_writable()
        names = self._here().names
        wanted = metadata.without_truncation(settings)
        if len(wanted) > metadata.ASK_EACH_UP_TO:
            present = set(self.list_streams())
        else:
            present = {s for s in wanted if self._has_events(names, s)}
        return metadata.apply(self._client, names, wanted, present)

    def _has_events(self, names: EpochNames, stream: str) -> bool:
        """Whether a stream read of ``stream`` in this epoch returns anything (truncated and deleted: no)."""
        from kurrentdbclient.exceptions import NotFoundError, StreamIsDeletedError

        try:
            return bool(self._call(lambda: self._client.get_stream(names.physical(stream), limit=1)))
        except (NotFoundError, StreamIsDeletedError):
            return False

    # ------------------------------------------------------------- streams
    def append(self, stream: str, events: Sequence[NewEvent], expected_version: ExpectedVersion = StreamState.ANY) -> int:
        self._check_writable()
        names = self._here().names
        if names.hollow:
            raise StoreError(f"epoch {names.epoch} of {self.url} holds nothing: its stream names belong to a migrated "
                             "epoch now; write to the store the applications use (switch, or roll back to it)")
        from kurrentdbclient import NewEvent as ClientEvent
        from kurrentdbclient import StreamState as ClientState
        from kurrentdbclient.exceptions import WrongCurrentVersionError

        none_yet = self.capabilities.first_stream_version - 1  # the version of a stream with no events
        if expected_version == none_yet:  # the client takes no negative revision: that is "no stream"
            expected = ClientState.NO_STREAM
        else:
            expected = expected_version if isinstance(expected_version, int) else getattr(ClientState, expected_version.name)
        batch = []
        for e in events:
            uid, same = lineage.server_id(e.event_id) if e.event_id else (None, True)
            meta = e.metadata or b"{}"
            if not same:
                meta, uid = lineage.to_server(meta, e.recorded_at, e.event_id)
            batch.append(ClientEvent(e.type, e.data, meta, id=uid) if uid else ClientEvent(e.type, e.data, meta))
        try:
            self._call(lambda: self._client.append_to_stream(names.physical(stream), current_version=expected,
                                                             events=batch))
        except WrongCurrentVersionError as exc:
            actual = exc.actual_version if isinstance(exc.actual_version, int) else None
            raise WrongExpectedVersion(stream, expected_version, actual) from None
        if isinstance(expected_version, int):
            return expected_version + len(batch)
        if expected_version is StreamState.NO_STREAM:
            return len(batch) - 1
        # any / exists: ask (an empty append to no stream leaves none), in the epoch appended to, even if a
        # switch happened meanwhile
        version = self._call(lambda: self._client.get_current_version(names.physical(stream)))
        return version if isinstance(version, int) else none_yet

    def read_stream(self, stream: str, from_version: int | None = None, limit: int | None = None) -> list[RecordedEvent]:
        from kurrentdbclient.exceptions import NotFoundError

        names = self._here().names
        try:
            events = self._call(lambda: self._client.get_stream(
                names.physical(stream), stream_position=from_version, limit=limit if limit is not None else 2**62))
        except NotFoundError:
            return []
        return [RecordedEvent(*to_row(e, len(names.prefix))) for e in events]

    def read_all(self, after: int | None = None, *, until: int | None = None, batch_size: int = 1000) -> Iterator[list[RecordedEvent]]:
        for rows in self.read_all_rows(after, until=until, batch_size=batch_size):
            yield [RecordedEvent(*r) for r in rows]

    def read_all_rows(
        self, after: int | None = None, *, until: int | None = None, batch_size: int = 1000,
        streams: StreamPartitions | None = None, types: Collection[str] | None = None, lean: bool = False,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Rows of this epoch in commit order. ``types`` is the server's filter (then this epoch's stream
        names are checked here); stream partitions are kept here, since the server filters on one thing
        at a time and has no hash of names."""
        keep = _partition_filter(self, streams)
        batch: list[tuple[Any, ...]] = []
        here = self._here()
        prefix = len(here.names.prefix)
        for e in epoch_events(self._client, here.names, here.visibility, after, until, types=types):
            row = to_row(e, prefix, lean)
            if keep is not None and not keep(row[0]):
                continue
            batch.append(row)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def list_streams(self) -> Iterator[str]:
        seen: dict[str, None] = {}
        for rows in self.read_all_rows(batch_size=10_000, lean=True):
            seen.update((r[0], None) for r in rows)
        return iter(seen)

    def stream_version(self, stream: str) -> int | None:
        version = self._call(lambda: self._client.get_current_version(self._here().names.physical(stream)))
        return version if isinstance(version, int) else None

    def stream_versions(self) -> dict[str, int]:
        versions: dict[str, int] = {}
        for rows in self.read_all_rows(batch_size=10_000, lean=True):
            versions.update((r[0], r[1]) for r in rows)
        return versions

    def stream_versions_as_of(self, source_position: int | None) -> dict[str, int]:
        """Stream versions as the batches up to a run's checkpoint ``source_position`` left them.

        Appends are not atomic with the run's checkpoint: a job killed between
        the two leaves events beyond the checkpoint. Numbering a resumed
        migration from those would append the same events again under new
        revisions; numbering from here re-appends them at the same revisions
        with the same ids, which the server answers as a no-op. Only the tail
        is read, backwards, down to the first event migrated from at or
        before the checkpoint: a checkpoint is a batch's last position, and
        batches are written one after the other (only a batch's streams in
        parallel), so everything beyond it was committed after everything up to it.
        """
        versions = self.stream_versions()
        if source_position is None:
            return {}
        here = self._here()
        for e in epoch_events(self._client, here.names, here.visibility, None, None, backwards=True):
            came_from = lineage.source_position(e.metadata or b"")
            if came_from is not None and came_from <= source_position:
                break
            stream = e.stream_name[len(here.names.prefix):]
            if e.stream_position == 0:
                versions.pop(stream, None)
            else:
                versions[stream] = min(versions.get(stream, e.stream_position), e.stream_position - 1)
        return versions

    def head_position(self) -> int | None:
        here = self._here()
        for e in epoch_events(self._client, here.names, here.visibility, None, None, backwards=True):
            return e.commit_position
        return None

    def count_events(self, after: int | None = None, until: int | None = None) -> int:
        """Counted by reading the positions (the server keeps no count); they are kept for
        :meth:`position_after`, which a job asks next over the same range."""
        here = self._here()
        positions: array[int] | None = array("q")
        counted = 0
        for e in epoch_events(self._client, here.names, here.visibility, after, until):
            counted += 1
            if positions is not None:
                positions.append(e.commit_position)
                if len(positions) > KEPT_AT_MOST:
                    positions = None  # too many to keep: position_after reads them again
        # kept up to the last position read, not up to ``until``: an event appended since has a larger one
        end = positions[-1] if positions else after
        self._positions = Positions(here.names, after, end, positions) if positions is not None else None
        return counted

    def position_after(self, after: int | None, count: int, *, until: int | None = None) -> int | None:
        here = self._here()
        kept = self._positions
        if kept is not None and kept.covers(here.names, after, until):
            return kept.after(after, count, until)
        last, seen = None, 0
        for e in epoch_events(self._client, here.names, here.visibility, after, until):
            seen += 1
            last = e.commit_position
            if seen == count:
                break
        return last

    def reopen(self, *, for_scans: bool = False) -> ESDBEventStore:
        return ESDBEventStore(self._raw_url, epoch=self.epoch, read_only=self.read_only)

    # -------------------------------------------------------------- epochs
    def epochs(self) -> list[EpochInfo]:
        return list(self._ledger.state()[0].epochs)

    def active_epoch(self) -> int:
        return self._ledger.state()[0].active

    def at_epoch(self, epoch: int) -> ESDBEventStore:
        state, _ = self._ledger.state()
        if state.epoch(epoch) is None:
            raise StoreError(f"there is no epoch {epoch}")
        return ESDBEventStore(self._raw_url, epoch=epoch, read_only=self.read_only, client=self._client)

    def create_epoch(self, source_epoch: int) -> int:
        self._check_writable()
        state, at = self._ledger.state()
        number = state.next_epoch
        if 1 not in state.hollow and self.at_epoch(1).head_position() is None:
            # an empty cluster (a migration's target): the new epoch takes the plain names, once
            state.prefixes[number] = ""
            state.hollow.append(1)
        state.epochs.append(EpochInfo(number, "building", source_epoch, time.time()))
        state.next_epoch = number + 1
        self._ledger.save_state(state, at)
        return number

    def finish_epoch(self, epoch: int) -> None:
        """Mark the epoch ready, carrying its source streams' metadata to it (:mod:`.metadata`)."""
        self._check_writable()
        state, at = self._ledger.state()
        info = state.epoch(epoch)
        if info is not None and info.status == "building":
            if info.source_epoch is not None and state.epoch(info.source_epoch) is not None:
                docs = metadata.source_metadata(self._client, state.names(info.source_epoch))
                self.at_epoch(epoch).apply_stream_settings(docs)
            state.with_status(epoch, "ready")
            self._ledger.save_state(state, at)

    def drop_epoch(self, epoch: int) -> None:
        """Soft-delete the epoch's streams (undoable until a scavenge) and forget the epoch."""
        self._check_writable()
        from kurrentdbclient import StreamState as ClientState

        state, at = self._ledger.state()
        if epoch == state.active:
            raise StoreError(f"epoch {epoch} is active; switch to another epoch before dropping it")
        if state.epoch(epoch) is None:
            raise StoreError(f"there is no epoch {epoch}")
        handle, names = self.at_epoch(epoch), state.names(epoch)
        for stream in list(handle.list_streams()):
            self._client.delete_stream(names.physical(stream), current_version=ClientState.ANY)
        state.epochs = [e for e in state.epochs if e.epoch != epoch]
        self._ledger.save_state(state, at)

    def switch_epoch(
        self, to_epoch: int, *, kind: str, expect_heads: dict[int, int | None], catch_up: CatchUp | None = None
    ) -> Switch:
        """Flip the active pointer, refusing if a head moved since verification.

        Not atomic with application writes: the server has no lock to hold
        writers off, so the heads are checked (and the catch-up, if any, done)
        right before the pointer is written with its expected revision. Stop
        writers to the old epoch (or have them resolve names through the
        pointer) before switching; an event appended in the last moment
        before the flip would be left in the old epoch.
        """
        self._check_writable()
        state, at = self._ledger.state()
        info = state.epoch(to_epoch)
        if info is None:
            raise StoreError(f"there is no epoch {to_epoch}")
        if to_epoch == state.active:
            raise StoreError(f"epoch {to_epoch} is already active")
        if info.status == "building":
            raise StoreError(f"epoch {to_epoch} is still being built; finish its migration first")
        active = state.active
        behind = verified_heads_or_behind(lambda epoch: self.at_epoch(epoch).head_position(), expect_heads,
                                          catch_up, active)
        if behind is not None:
            self._catch_up(catch_up, None if behind == WAS_EMPTY else behind, to_epoch, expect_heads.get(to_epoch))  # type: ignore[arg-type]
        state.with_status(active, "retired")
        state.with_status(to_epoch, "active")
        state.active = to_epoch
        flip = Switch(len(state.switches) + 1, kind, active, to_epoch, time.time(), self.at_epoch(to_epoch).head_position())
        state.switches.append(flip)
        self._ledger.save_state(state, at)
        return flip

    def _catch_up(self, catch_up: CatchUp, source_head: int | None, to_epoch: int, target_head: int | None) -> None:
        source, target = self.at_epoch(catch_up.source_epoch), self.at_epoch(to_epoch)
        rows = [r for b in source.read_all_rows(source_head, batch_size=100_000) for r in b]
        events, run = catch_up.prepare(rows)
        target.write_batch(events, run=run)
        written = [r for b in target.read_all_rows(target_head, batch_size=100_000) for r in b]
        catch_up.check(rows, written)
        if rows and source.head_position() != rows[-1][2]:
            raise HeadMoved(f"epoch {catch_up.source_epoch} is still being appended to; stop its writers, then switch")

    def switches(self) -> list[Switch]:
        return list(self._ledger.state()[0].switches)

    # ------------------------------------------------ migration bookkeeping
    def lock(self, name: str, *, ttl_s: float | None = None) -> AbstractContextManager[None]:
        return lease.hold(self._client, name, self.url)

    def save_run(self, run: Run) -> None:
        self._check_writable()
        self._ledger.save_run(run)

    def runs(self, kind: str | None = None) -> list[Run]:
        return [r for r in self._ledger.runs() if kind is None or r.kind == kind]

    def write_batch(self, events: Sequence[TargetEvent], *, run: Run | None = None,
                    quarantined: Sequence[QuarantinedEvent] = ()) -> None:
        """Append stream by stream (see :mod:`.writing`), then the quarantine, then the run's checkpoint."""
        self._check_writable()
        from kurrentdbclient.exceptions import WrongCurrentVersionError

        names = self._here().names
        appends = writing.plan(events, names, self.capabilities.first_stream_version)
        try:
            self._call(lambda: writing.append_all(self._client, appends, self.capabilities.first_stream_version))
        except WrongCurrentVersionError as exc:
            raise StoreError(f"epoch {names.epoch}: stream {exc.stream_name!r} is not where the migration left it "
                             f"(expected revision {exc.expected_version}, found {exc.actual_version}): another writer "
                             "appended to the new epoch; migrate again with --restart") from None
        self._ledger.add_quarantine(list(quarantined))
        if run is not None:
            self._ledger.save_run(run)

    def quarantine(self, run_id: str | None = None) -> list[QuarantinedEvent]:
        return self._ledger.quarantine(run_id)

    def accept_quarantine(self, run_id: str, ids: Sequence[int] | None = None) -> int:
        self._check_writable()
        return self._ledger.accept(run_id, list(ids) if ids is not None else None)

    # ----------------------------------------------------------- following
    def wait_for_appends(self, timeout: float) -> bool:
        """Wait for an event appended to the cluster, through a catch-up subscription (:mod:`.watch`)
        started at this epoch's head on the first wait; a node out of reach: sleep, as polling does."""
        if self._watch is None or self._watch.failed:
            if self._watch is not None:
                self._watch.close()
                self._watch = None
            try:
                self._watch = AppendWatch(self._client, self.head_position())
            except Exception:  # noqa: BLE001 - unreachable: the follower's next read says so, in its own words
                time.sleep(timeout)
                return False
        return self._watch.wait(timeout)

    # -------------------------------------------------------------- admin
    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._owns_client:
            self._client.close()

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.url} is open read-only")

    def _call(self, fn: Any) -> Any:
        """Run a client call, turning an unreachable cluster into one masked line.

        A node that is down, restarting or electing a leader is a
        :class:`TransientStoreError`: the jobs' retry policy resumes from the
        last checkpoint (a repeated append is a no-op on the server).
        """
        from kurrentdbclient.exceptions import DiscoveryFailedError, ServiceUnavailableError

        try:
            return fn()
        except (ServiceUnavailableError, DiscoveryFailedError) as exc:
            reason = mask_url(str(exc)).splitlines()[0] if str(exc) else "unavailable"
            raise TransientStoreError(f"{self.url}: {type(exc).__name__}: {reason}") from exc


class _Bound:
    """One epoch's stream names and the visibility of its streams, as a handle works on them."""

    __slots__ = ("names", "visibility")

    def __init__(self, client: Any, names: EpochNames) -> None:
        self.names, self.visibility = names, Visibility(client, names)


def _partition_filter(store: EventStore, streams: StreamPartitions | None) -> Any:
    if streams is None:
        return None
    if streams.bounds:
        bounds, indexes = streams.bounds, streams.indexes
        return lambda name: bisect.bisect_right(bounds, name) in indexes
    count, indexes, partition = streams.count, streams.indexes, store.stream_partition
    return lambda name: partition(name, count) in indexes


__all__ = ["ESDBEventStore"]
