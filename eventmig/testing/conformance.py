"""The store conformance suite: what every backend's store must do, written once, run per backend.

A backend's tests subclass :class:`StoreConformance` and say how to get a
new, empty store for each test; every test of every port then runs against
it::

    # tests/test_mystore.py
    import pytest
    from eventmig.testing.conformance import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store_url(self, tmp_path):
            return f"mystore:///{tmp_path}/events"

Expectations that legitimately differ between backends come from the
store's declared :class:`~eventmig.ports.Capabilities`, never from its
class, and each declaration is itself checked. Tests that start processes
open the store in them through :meth:`StoreFixtures.open_another`, which a
subclass overrides when a URL alone does not say how to open its store.

This module imports pytest and hypothesis: it is for test modules, and
neither ``import eventmig`` nor eventmig's pytest plugin imports it.
"""

from __future__ import annotations

from eventmig.testing.conformance_capabilities import CapabilityConformance
from eventmig.testing.conformance_epochs import EpochConformance
from eventmig.testing.conformance_ledger import LedgerConformance
from eventmig.testing.conformance_reads import ReadConformance
from eventmig.testing.conformance_streams import StreamConformance
from eventmig.testing.conformance_support import StoreFixtures

__all__ = [
    "CapabilityConformance",
    "EpochConformance",
    "LedgerConformance",
    "ReadConformance",
    "StoreConformance",
    "StoreFixtures",
    "StreamConformance",
]


class StoreConformance(StreamConformance, ReadConformance, EpochConformance, LedgerConformance, CapabilityConformance):
    """Every port's tests at once: subclass it (named ``Test...``) and override the ``store_url`` fixture.

    A backend done is a backend that passes it; the parts (``StreamConformance``...)
    can also be subclassed alone, for a store that implements some ports only.
    """
