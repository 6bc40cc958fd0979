"""The ``eventmig`` command: a typer app and its rendering, each command a thin layer over :mod:`eventmig.command`."""
