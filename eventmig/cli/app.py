"""The ``eventmig`` command: flags in, a library call from :mod:`eventmig.command`, a report out.

Exit codes (see :class:`~eventmig.errors.ExitCode`): 0 ok; 1 verification or
check failed; 2 usage or configuration error; 3 runtime failure; 4 another
job holds the lock; 130 interrupted (Ctrl-C). Errors are one line on stderr;
``--json`` prints the report as JSON on stdout (errors too, as
``{"error": ..., "exit_code": ...}``).

The commands live in :mod:`~eventmig.cli.project_commands`, :mod:`~eventmig.cli.job_commands`,
:mod:`~eventmig.cli.state_commands` and :mod:`~eventmig.cli.demo_command`, all
registering on the one typer app of :mod:`~eventmig.cli.shared`; importing them
here registers them. This module runs the app: usage errors and Ctrl-C as reports.
"""

from __future__ import annotations

import sys

import msgspec
import typer
from rich.text import Text

from eventmig.cli import about
from eventmig.errors import ExitCode
from eventmig.cli.interrupts import Interrupts, exit_with, quiet_library_logs
from eventmig.urls import mask_url

# importing the command modules registers their commands, in the order the help lists them
from eventmig.cli import project_commands, job_commands, state_commands, demo_command  # noqa: F401
from eventmig.cli.shared import app, err, fail
from eventmig.cli.state_commands import _StopOnSignal  # noqa: F401 (imported from here by callers)


# every command's --help ends with an example (eventmig/cli/about.py holds them)
for _info in app.registered_commands:
    _name = _info.name or (_info.callback.__name__ if _info.callback else "")
    if _name in about.EXAMPLES and _info.epilog is None:
        _info.epilog = about.epilog(about.EXAMPLES[_name])


#: click's base of usage errors; typer exposes it only through subclasses (recent typers vendor click)
_CLICK_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main(argv: list[str] | None = None) -> None:
    """Run the command line; a usage error is one more error report, JSON with ``--json``.

    Click reports bad flags and values itself, before any command runs; in
    standalone mode it would print them as text even to a script that asked
    for JSON, so eventmig takes them over here.
    """
    args = sys.argv[1:] if argv is None else argv
    quiet_library_logs()
    Interrupts.install()
    try:
        code = app(args=args, prog_name="eventmig", standalone_mode=False)
    except KeyboardInterrupt:  # before or after the command itself, which reports its own
        _fail_interrupted(args)
    except _CLICK_ERROR as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `eventmig` alone: the help, as a usage error's answer
            exc.show()
            exit_with(int(ExitCode.USAGE))
        message = mask_url(" ".join(exc.format_message().split()))
        if "--json" in args:
            sys.stdout.write(msgspec.json.encode({"error": message, "exit_code": int(ExitCode.USAGE)}).decode() + "\n")
        else:
            context = getattr(exc, "ctx", None)
            hint = f" (see `{context.command_path} --help`)" if context is not None else ""
            err.print(Text(f"error: {message.rstrip('.')}{hint}", style="red"), soft_wrap=True)
        exit_with(int(ExitCode.USAGE))
    except typer.Abort:  # click's word for a Ctrl-C outside a command
        _fail_interrupted(args)
    if code == ExitCode.INTERRUPTED and not Interrupts.reported:
        _fail_interrupted(args)  # typer turns a Ctrl-C outside a command into 130, silently
    exit_with(code if isinstance(code, int) else 0)


def _fail_interrupted(args: list[str]) -> None:
    """A Ctrl-C that reached no command's own report: while flags were parsed, or as a command returned."""
    message = "interrupted" if Interrupts.started else "interrupted before the command started; nothing was done"
    try:
        fail(message, ExitCode.INTERRUPTED, "--json" in args)
    except typer.Exit:
        exit_with(int(ExitCode.INTERRUPTED))


if __name__ == "__main__":
    main()
