"""The upcasters a team registers with eventmig to bring its eventsourcing store from version 1 to version 3.

The types are eventsourcing's topics. ``eventsourcing_app`` (version-1 event
classes) became ``eventsourcing_app_v3``, whose event classes have
``class_version = 3`` and no ``upcast_`` methods: each old topic is renamed
to the new one at version 3, so the migrated events carry the new topic and
``class_version`` 3 in their state. The steps work on the state as a dict,
so eventsourcing's ``{"_type_": ..., "_data_": ...}`` values pass through
untouched.
"""

from __future__ import annotations

from eventmig import Registry

OLD, NEW = "eventsourcing_app:Dog", "eventsourcing_app_v3:Dog"

registry = Registry(version_location="metadata:class_version")

# Registered: ``name`` became ``display_name`` (v2), then a ``breed`` appeared (v3). The aggregate's
# own topic is in the created event's state: the aggregate is now the new module's Dog.
registry.fields(f"{OLD}.Registered", 1, rename={"name": "display_name"})
registry.fields(f"{OLD}.Registered", 2, defaults={"breed": "mixed"},
                convert={"originator_topic": lambda _old: NEW})
registry.rename_type(f"{OLD}.Registered", 3, to=f"{NEW}.Registered", to_version=3)

# TrickAdded: a ``level`` appeared (v2), v3 changed nothing stored; the class is now called TrickLearned.
registry.fields(f"{OLD}.TrickAdded", 1, defaults={"level": 1})
registry.fields(f"{OLD}.TrickAdded", 2)
registry.rename_type(f"{OLD}.TrickAdded", 3, to=f"{NEW}.TrickLearned", to_version=3)
