"""What ``eventmig --version`` and each command's ``--help`` say beyond the flags.

Kept apart from the command definitions so that a help text is changed in
one place, and so that a test can hold every command to having an example.
"""

from __future__ import annotations

from importlib import metadata

#: one example per command, shown at the end of its ``--help``: the flags an operator reaches for first
EXAMPLES: dict[str, str] = {
    "init": "eventmig init --example shop   # the reference shop service, ready for `eventmig demo`",
    "plan": "eventmig plan --format mermaid > chains.md   # the upcaster graph, for a pull request",
    "check": "eventmig check --examples 200 --sample 1000 --json",
    "migrate": "eventmig migrate --workers 4 --metrics-port 9464 --log-format json",
    "verify": "eventmig verify --workers 4",
    "switch": "eventmig switch --attempts 10",
    "rollback": "eventmig rollback --read-models order_summary",
    "rebuild": "eventmig rebuild order_summary --workers 8 --read-models postgresql+psycopg://app@db/read",
    "follow": "eventmig follow --read-models postgresql+psycopg://app@db/read --lease 10",
    "status": "eventmig status --store postgresql+psycopg://app@db/events",
    "quarantine": "eventmig quarantine --accept --id 12 --id 13",
    "demo": "eventmig demo --events 1000000",
    "inspect": "eventmig inspect postgresql+psycopg://app@db/shop   # the tables, their layouts and the settings to use",
}

APP_EXAMPLE = "eventmig init --example shop && eventmig demo"


def epilog(example: str) -> str:
    """An example as click prints it: ``\\b`` keeps the line as written rather than rewrapped."""
    return f"Example:\n\n\b\n  {example}"


def version() -> str:
    """The installed distribution's version; the source's when eventmig runs from an uninstalled tree."""
    try:
        return metadata.version("eventmig")
    except metadata.PackageNotFoundError:
        from eventmig import __version__

        return __version__
