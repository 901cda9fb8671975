"""The last line a user sees on bad input is the cause, not MONAI's wrapper around it.

`python -m monai.bundle run` wraps an error raised while building a component in
"Failed to instantiate component ..." and ends its output with a debugging hint, so the
message that names the file and the problem sits dozens of lines up. The hook installed
here (only when the process was started by `monai.bundle`, and only if no other hook is
installed) closes any open progress bar, prints the usual traceback, then the bundle's own
error again as the last line. The error types the bundle raises for a user's input live here.
"""

from __future__ import annotations

import sys
import traceback

__all__ = ["OutputError", "SettingError", "install_cause_hook", "last_line", "root_cause"]


class OutputError(OSError):
    """An output that cannot be written (folder, full disk, read-only mount), naming the file and what to do."""


class SettingError(ValueError):
    """A flag or config value that cannot be used, naming the flag, what was expected and what was given."""


def root_cause(error: BaseException) -> BaseException:
    """The innermost error of the bundle's own in an error's `__cause__` / `__context__` chain, else the innermost one.

    The bundle's errors name the file and the problem; a library error they wrap is detail, and
    one they raise `from None` is left out, as Python's own traceback leaves it out.
    """
    chain = []
    while error is not None and all(error is not e for e in chain):
        chain.append(error)
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    own = [e for e in chain if type(e).__module__.split(".")[0] == "bundle"]
    return (own or chain)[-1]


def last_line(error: BaseException) -> str:
    """What the hook prints last for `error`: its root cause's type and message."""
    cause = root_cause(error)
    return f"error: {type(cause).__name__}: {cause}"


def _close_progress_bars() -> None:
    """Close open tqdm bars now, so that none is redrawn after the error line."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


def _hook(kind, error, tb) -> None:
    _close_progress_bars()
    traceback.print_exception(kind, error, tb)
    print(last_line(error), file=sys.stderr)


def install_cause_hook() -> None:
    """Install the hook when running under `python -m monai.bundle` and nothing else replaced `sys.excepthook`."""
    started_by_monai = any(arg.replace("\\", "/").endswith("monai/bundle/__main__.py") for arg in sys.argv[:1])
    if started_by_monai and sys.excepthook is sys.__excepthook__:
        sys.excepthook = _hook
