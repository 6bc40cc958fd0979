"""Upcasters of the reference "shop" service.

This package is service code, the kind a team using eventmig keeps next to
its aggregates: one msgspec Struct per schema version, and the steps between
them. ``pyproject.toml`` points eventmig at ``registry`` below::

    [tool.eventmig]
    upcasters = "upcasters:registry"

The history it handles, as an old shop wrote it:

* ``OrderPlaced`` v1 had a ``total`` in euros (a float); v2 counts cents (a
  unit conversion); v3 adds ``currency``, defaulting to EUR (a new field).
* ``ItemAdded`` v1 is now ``LineItemAdded`` v1 (a rename, with ``qty`` and a
  euro ``price`` becoming ``quantity`` and ``unit_price_cents``).
* ``OrderShipped`` v1 carried the address as one string; it splits into
  ``ShippingAddressRecorded`` v1 and ``OrderShipped`` v2.
* ``CustomerRegistered`` v1 ``name`` is ``full_name`` in v2, which adds
  ``marketing_opt_in`` (default False).
* ``CartViewed`` was analytics noise in the event store: dropped.
* ``OrderCancelled`` and ``PaymentCaptured`` never changed (v1 is the head).
"""

from eventmig import Registry

registry = Registry(version_location="metadata:schema_version")

from . import customers, orders  # noqa: E402,F401  (importing registers their schemas and steps)
