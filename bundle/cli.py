"""The one entry of the `scripts/*.py` command-line faces: fire, with `--help` that always means help.

fire hands a `--help` it does not recognise to a command that takes `**kwargs` as a keyword
(`phantom.py make --help` became `PhantomConfig(help=True)`); here `--help` / `-h` anywhere
becomes fire's own `-- --help`, so every command and subcommand prints its help and exits 0.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

__all__ = ["run_commands"]

HELP_FLAGS = ("--help", "-h")


def run_commands(commands: dict[str, Callable] | Callable, argv: Sequence[str] | None = None, name: str | None = None):
    """Run `fire.Fire(commands)` on `argv` (default: the process arguments), reading any help flag as a help request."""
    import fire

    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args and any(flag in args for flag in HELP_FLAGS):
        args = [a for a in args if a not in HELP_FLAGS] + ["--", "--help"]
    return fire.Fire(commands, command=args, name=name)
