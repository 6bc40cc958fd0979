"""``python -m eventmig`` and the ``eventmig`` command.

The command's modules (typer, rich, SQLAlchemy, the service's code) take a
moment to load; a Ctrl-C meanwhile ends the command as one later would, with
one line and exit code 130, rather than a traceback of whichever import it
interrupted.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

#: ExitCode.INTERRUPTED, before eventmig.errors is loaded
_INTERRUPTED = 130


def _interrupted_while_loading(signum: int, frame: Any) -> None:
    sys.stderr.write("error: interrupted before the command started; nothing was done\n")
    sys.stderr.flush()
    os._exit(_INTERRUPTED)


def main() -> None:
    signal.signal(signal.SIGINT, _interrupted_while_loading)
    from eventmig.cli.app import main as run_command

    run_command()


if __name__ == "__main__":
    main()
