"""A projection whose code fails: one line naming the projection, its code and the event; nothing lost.

A handler, a key function or a rows function raising, or rows the database
rejects, stop the rebuild with a :class:`RebuildFailed` (exit code 3) that
says whose code failed on what, in one process and in worker processes
alike. The live tables are untouched, and once the code is fixed the next
rebuild starts afresh (the code's fingerprint changed) and swaps in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

import eventmig.jobs.rebuild.workers as rebuild_workers
import projections as shop
from eventmig.jobs.seed import seed
from eventmig.errors import ExitCode
from eventmig.projection.api import STREAM, Projection
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.jobs.rebuild import RebuildFailed, rebuild
from eventmig.backends import open_store
from upcasters.orders import PaymentCaptured

REPO = Path(__file__).resolve().parent.parent


def _summary(*, handler: bool = False, key: bool = False, rows: str | None = None) -> Projection:
    """order_summary with a fault: its payment handler, its key function or its rows function fails."""
    base = shop.order_summary

    def order_of(e: object) -> str:
        if key and type(e) is PaymentCaptured:
            raise LookupError("no order for this payment")
        return e.order_id  # type: ignore[attr-defined]

    p = Projection("order_summary", version=1, tables=base.tables, state=base.state_type,
                   key=order_of if key else STREAM)
    for event_type, fn in base.handlers.items():
        if event_type is not PaymentCaptured:
            p.on(event_type)(fn)

    @p.on(PaymentCaptured)
    def paid(s, e):
        if handler:
            raise ValueError(f"refund of {e.amount_cents} cents?")
        s.status = "paid"

    @p.rows
    def summary_rows(k, s):
        if not s.order_id:
            return []
        if rows == "raise" and s.status == "cancelled":
            raise ValueError(f"cancelled order {s.order_id}")
        status = None if rows == "null" and s.status == "cancelled" else s.status
        return [(s.order_id, s.customer_id, status, s.item_count, s.total_cents, s.currency)]

    return p


def _live(url: str) -> tuple[list[tuple], str]:
    with ReadModelDB(url) as db, db.read() as conn:
        rows = [tuple(r) for r in conn.exec_driver_sql("SELECT * FROM order_summary ORDER BY order_id")]
        return rows, db.live_models(conn)["order_summary"].run_id


FAULTS = {
    "handler": (dict(handler=True), r"^projection order_summary: handler of PaymentCaptured failed on PaymentCaptured "
                                    r"event at order-\S+@\d+ \(position \d+\): ValueError: refund of \d+ cents\?$"),
    "key": (dict(key=True), r"^projection order_summary: key function failed on PaymentCaptured event at "
                            r"order-\S+@\d+ \(position \d+\): LookupError: no order for this payment$"),
    "rows": (dict(rows="raise"), r"^projection order_summary: rows function failed on key '[^']+': "
                                 r"ValueError: cancelled order \S+$"),
    "rejected": (dict(rows="null"), r"^projection order_summary: writing its rows into order_summary failed: "
                                    r"\w+: .*(null|NULL)"),
}


@pytest.mark.parametrize("fork", [False, True], ids=["one-process", "worker-processes"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_failing_projection_code_is_named_and_loses_nothing(store_url, shop_registry, monkeypatch, fault, fork):
    with open_store(store_url) as store:
        seed(store, 1200)
        assert rebuild(store, [shop.order_summary], registry=shop_registry, read_models=store_url, workers=2).ok
        before = _live(store_url)
        monkeypatch.setattr(rebuild_workers, "FORK_MIN_EVENTS", 0 if fork else 10**9)
        options, message = FAULTS[fault]
        with pytest.raises(RebuildFailed, match=message) as failed:
            rebuild(store, [_summary(**options)], registry=shop_registry, read_models=store_url, workers=2,
                    batch_size=200)
        assert failed.value.exit_code == ExitCode.RUNTIME
        assert "\n" not in str(failed.value)
        assert _live(store_url) == before  # the live table and its record are as they were
        fixed = rebuild(store, [shop.order_summary], registry=shop_registry, read_models=store_url, workers=2)
        assert fixed.ok and fixed.swapped and fixed.projections[0].tables[0].changed == 0
        assert any("code changed" in n for n in fixed.notes)  # the failed run was abandoned, not resumed
        assert _live(store_url)[0] == before[0]


def test_a_failing_handler_through_the_cli(sqlite_url: str, tmp_path: Path):
    with open_store(sqlite_url) as store:
        seed(store, 800)
    service = tmp_path / "service"
    (service / "broken").mkdir(parents=True)
    (service / "pyproject.toml").write_text(textwrap.dedent(f"""
        [tool.eventmig]
        store = "{sqlite_url}"
        upcasters = "upcasters:registry"
        projections = "broken:projections"
    """))
    (service / "broken" / "__init__.py").write_text(textwrap.dedent("""
        from eventmig.projection.api import STREAM, Projection
        from projections.orders import order_summary as base
        from upcasters.orders import LineItemAdded

        order_summary = Projection("order_summary", version=1, tables=base.tables, state=base.state_type, key=STREAM)
        for event_type, fn in base.handlers.items():
            if event_type is not LineItemAdded:
                order_summary.on(event_type)(fn)

        @order_summary.on(LineItemAdded)
        def item(s, e):
            return 1 / 0

        order_summary.rows(base._rows)
        projections = [order_summary]
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    for flags in ([], ["--json"]):
        result = subprocess.run([sys.executable, "-m", "eventmig", "rebuild", "--workers", "2", *flags], cwd=service,
                                env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 3
        assert "Traceback" not in result.stderr + result.stdout
        if flags:
            error = result.stdout.strip()
            assert error.startswith('{"error":"projection order_summary: handler of LineItemAdded failed on ')
            assert error.endswith('ZeroDivisionError: division by zero","exit_code":3}')
        else:
            (line,) = result.stderr.strip().splitlines()
            # the stored event may be a legacy ItemAdded, upcast to a LineItemAdded on its way to the handler
            assert line.startswith("error: projection order_summary: handler of LineItemAdded failed on ")
            assert line.endswith("): ZeroDivisionError: division by zero") and " event at order-" in line
    with open_store(sqlite_url) as store, store.engine.connect() as conn:
        assert not sa.inspect(conn).has_table("order_summary")  # nothing was swapped in


def test_handlers_that_are_not_plain_functions_are_named_too(sqlite_url, shop_registry):
    """A callable object or a partial as handler: the error still names its projection."""
    import functools

    class Refuse:
        def __call__(self, s, e):
            raise RuntimeError("callable object")

    def refuse(why, s, e):
        raise RuntimeError(why)

    with open_store(sqlite_url) as store:
        seed(store, 300)
        for handler, why in ((Refuse(), "callable object"), (functools.partial(refuse, "partial"), "partial")):
            p = Projection("order_summary", version=1, tables=shop.order_summary.tables, state=shop.order_summary.state_type)
            p.on("OrderPlaced")(handler)
            p.rows(lambda k, s: [])
            with pytest.raises(RebuildFailed, match=rf"^projection order_summary: handler of OrderPlaced failed on .*"
                                                    rf"RuntimeError: {why}$"):
                rebuild(store, [p], registry=shop_registry, read_models=sqlite_url, workers=1, restart=True)
