"""SQL identifiers: quoted by the database's dialect and checked against its length limit.

Names of tables, indexes and columns cannot be bound as parameters, so
eventmig formats them into its SQL; this module is the one place that does
it. :meth:`Identifiers.quote` leaves a plain lower-case name as it is and
quotes any other (a reserved word such as ``order``, mixed case such as
``Order``), so a name always means the table or column it spells, on SQLite
and on PostgreSQL alike.

PostgreSQL cuts a name longer than 63 bytes (NAMEDATALEN - 1) down to 63
with no more than a notice: the ``<table>_e2`` of a 63-byte table name *is*
that table, and an index whose name is cut may collide with another and
quietly not be created. So every name eventmig derives from a name the user
chose (an epoch's table and its indexes, a shadow table, ``__prev``) is
computed and checked before anything is written, and one that would not fit
is refused with the name, the derived name and the limit. (Shortening
derived names instead would leave the tables an operator looks for under
other names than the documented ``<table>_e<N>`` and ``<table>__prev``.)
SQLite has no such limit.
"""

from __future__ import annotations

from typing import Any

from eventmig.errors import ConfigError


class Identifiers:
    """Quoting and length checks of one database's names (``engine.dialect``)."""

    def __init__(self, dialect: Any) -> None:
        self._quote = dialect.identifier_preparer.quote
        #: bytes a name may have (PostgreSQL counts bytes of UTF-8, not characters); SQLite: no real limit
        self.limit: int = dialect.max_identifier_length
        self.backend = "PostgreSQL" if dialect.name == "postgresql" else "SQLite" if dialect.name == "sqlite" else dialect.name

    def quote(self, name: str) -> str:
        """``name`` as SQL text: quoted where the dialect needs it, refused if the database would cut it."""
        self.check(name, "name")
        return self._quote(name)

    def check(self, name: str, what: str) -> str:
        """Refuse a name of the user's that is empty or longer than the database keeps; return it."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{what} must be a non-empty string, got {name!r}")
        size = len(name.encode())
        if size > self.limit:
            raise ConfigError(
                f"{what} {name!r} is {size} bytes long, over {self.backend}'s limit of {self.limit} bytes for a name"
            )
        return name

    def derive(self, name: str, suffix: str, what: str, derived_what: str, *, shown: str | None = None) -> str:
        """``name + suffix``, a name eventmig makes from one of the user's, if it fits; refused otherwise.

        ``what`` says what ``name`` is ("events table name"), ``derived_what``
        what the result is ("the index of epoch 2"): the error names both, and
        how long ``name`` may be. ``shown``: the suffix as the error shows it
        (``__<run id>`` for a suffix not chosen yet).
        """
        derived = self.check(name, what) + suffix
        size = len(derived.encode())
        if size > self.limit:
            room = self.limit - len(suffix.encode())
            raise ConfigError(
                f"{what} {name!r} is too long for {self.backend}: {derived_what} {name + (shown or suffix)!r} would be "
                f"{size} bytes, over its limit of {self.limit} bytes (the name may have at most {max(room, 0)} bytes)"
            )
        return derived
