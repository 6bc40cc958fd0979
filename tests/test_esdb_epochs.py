"""An application's long-lived EventStoreDB handle follows the active epoch through switches and rollbacks.

The handle is opened before the migration and never reopened, as a
service's store object is; the switch and the rollback are done by other
handles (another process would do the same: the pointer is on the server).
"""

from __future__ import annotations

from eventmig import new_event
from eventmig.backends import open_store
from eventmig.jobs.cutover import rollback, switch
from eventmig.jobs.migrate import migrate
from eventmig.jobs.seed import seed


def test_a_handle_opened_before_the_switch_reads_and_appends_the_active_epoch(esdb_node, shop_registry):
    with open_store(esdb_node.url) as app:
        seed(app, 200)
        stream = next(s for s in app.list_streams() if s.startswith("order-"))
        before = len(app.read_stream(stream))
        with open_store(esdb_node.url) as operator:
            migrate(operator, shop_registry, batch_size=100, workers=1)
            switch(operator, shop_registry, workers=1)
        assert app.epoch == 2
        migrated = app.read_stream(stream)
        assert migrated[0].decoded_metadata()["eventmig"]["source"]["stream"] == stream  # epoch 2's copy
        app.append(stream, [new_event("OrderNoted", {"n": 1})], expected_version=migrated[-1].version)
        with open_store(esdb_node.url) as operator:
            assert [e.type for e in operator.at_epoch(2).read_stream(stream)][-1] == "OrderNoted"
            assert len(operator.at_epoch(1).read_stream(stream)) == before  # nothing leaked into the old epoch
            rollback(operator, force=True)  # the late event stays in epoch 2, retired
        assert app.epoch == 1
        assert len(app.read_stream(stream)) == before
        assert "OrderNoted" not in {e.type for batch in app.read_all() for e in batch}


def test_a_pinned_handle_stays_where_it_was_pinned(esdb_node, shop_registry):
    with open_store(esdb_node.url) as store:
        seed(store, 50)
        pinned = store.at_epoch(1)
        migrate(store, shop_registry, batch_size=100, workers=1)
        switch(store, shop_registry, workers=1)
        assert store.epoch == 2 and pinned.epoch == 1
        assert pinned.count_events() == 50
        assert store.count_events() == store.at_epoch(2).count_events()
