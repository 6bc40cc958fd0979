"""Opening a kurrentdbclient connection from an eventmig store URL, credentials kept out of sight.

The URL is the client's own (``esdb://host:2113?Tls=false``,
``esdb+discover://...``, ``kurrentdb://...``). Where it carries no
username, ``EVENTMIG_ESDB_USERNAME`` / ``EVENTMIG_ESDB_PASSWORD`` supply
them, so a password need not sit in a config file; ``EVENTMIG_ESDB_CA_FILE``
names the cluster's CA certificate for TLS (the client's ``tlsCaFile``
query parameter works too). Only :func:`~eventmig.urls.mask_url`'s form
of a URL is ever shown.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from eventmig.errors import ConfigError, StoreError
from eventmig.urls import mask_url, url_shown_unparsed
from .names import SCHEMES

ENV_USERNAME = "EVENTMIG_ESDB_USERNAME"
ENV_PASSWORD = "EVENTMIG_ESDB_PASSWORD"
ENV_CA_FILE = "EVENTMIG_ESDB_CA_FILE"


def with_credentials(url: str) -> str:
    """``url`` with the environment's username and password put in, unless it names a user itself."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ConfigError(f"not an EventStoreDB URL: {url_shown_unparsed(url)!r} (expected esdb://HOST:PORT...)")
    user = os.environ.get(ENV_USERNAME)
    if not user or "@" in rest.split("/", 1)[0].split("?", 1)[0]:
        return url
    password = os.environ.get(ENV_PASSWORD, "")
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}"


def connect(url: str) -> Any:
    """A connected ``KurrentDBClient``; a clear one-line error when the client is missing or the URL is bad."""
    try:
        from kurrentdbclient import KurrentDBClient
    except ModuleNotFoundError:
        raise ConfigError("EventStoreDB stores need the esdb extra: pip install 'eventmig[esdb]'") from None
    options: dict[str, Any] = {}
    ca_file = os.environ.get(ENV_CA_FILE)
    if ca_file:
        try:
            with open(ca_file, "rb") as f:
                options["root_certificates"] = f.read()
        except OSError as exc:
            raise ConfigError(f"{ENV_CA_FILE}={ca_file}: {exc.strerror}") from None
    try:
        return KurrentDBClient(with_credentials(url), **options)
    except ValueError as exc:  # the client's URL parser and its TLS checks
        raise ConfigError(f"{mask_url(url)}: {mask_url(str(exc))}") from None
    except Exception as exc:  # noqa: BLE001 - unreachable node, discovery failure: one line, masked
        raise StoreError(f"{mask_url(url)}: cannot connect: {type(exc).__name__}: {mask_url(str(exc)).splitlines()[0] if str(exc) else ''}") from None
