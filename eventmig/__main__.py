"""``python -m eventmig``: the same as the ``eventmig`` command."""

from .cli import main

main()
