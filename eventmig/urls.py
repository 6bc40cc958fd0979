"""Store URLs as eventmig shows them: never with a password."""

from __future__ import annotations

import re

__all__ = ["mask_url", "url_shown_unparsed"]

# up to the URL's last "@": a password may hold an unescaped "@" (over-masking is harmless)
_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)\S*@", re.IGNORECASE)
# libpq (and so psycopg) also takes the password as a query parameter: ...?password=...
# (up to the next parameter, a space or quote, or the ": " of a message quoting the URL)
_PASSWORD_PARAM = re.compile(r"(?P<head>[?&]password=)[^&\s'\"]*?(?=$|[&\s'\"]|:(?:\s|$))", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``: the only form of a URL eventmig prints.

    Applied to whole messages too, so it finds URLs inside text.
    """
    url = _PASSWORD.sub(lambda m: f"{m.group('head')}***@", url)
    return _PASSWORD_PARAM.sub(lambda m: f"{m.group('head')}***", url)


def url_shown_unparsed(url: str) -> str:
    """A URL that could not be parsed, as an error may show it: nothing before its last ``@``.

    Where a URL did not parse, nobody knows where its password ends; what
    follows the last ``@`` (host, port, database) is what its author needs
    to see to recognise it, and holds no part of a password.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    at = rest.rfind("@")
    if at >= 0:
        rest = "***" + rest[at:]
    return mask_url(head + sep + rest)
