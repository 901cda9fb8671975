"""One launcher for `monai.bundle run` that studies and tools share: a subprocess by default, or this interpreter.

A subprocess isolates each run (memory, logging, a crash stays in its run) and pays MONAI's
start-up of a few seconds; in this interpreter (`in_process`, or `XCT_IN_PROCESS=1` in the
environment, which the test suite sets) a study of dozens of short runs skips that start-up.
Either way the run's log goes to `log`, and a failure raises naming it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["bundle_command", "command_line", "run_bundle"]

_FILE_LOGGING = """[loggers]
keys=root
[handlers]
keys=file
[formatters]
keys=plain
[logger_root]
level=INFO
handlers=file
[handler_file]
class=FileHandler
level=INFO
formatter=plain
args=({path!r}, "w")
[formatter_plain]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


def command_line(overrides: dict) -> list[str]:
    """`--KEY VALUE` arguments for `overrides`, values as MONAI's CLI parses them back."""
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else repr(value)]
    return args


def config_file_list(config_files: Sequence[str | os.PathLike]) -> str:
    """The `--config_file` value MONAI reads as a list of files merged in order: "['a.json','b.json']"."""
    return "[" + ",".join(f"'{f}'" for f in config_files) + "]"


def bundle_command(workflow: str, config_files: Sequence[str | os.PathLike], overrides: dict) -> list[str]:
    """The argv of `python -m monai.bundle run WORKFLOW --config_file [...] --KEY VALUE ...` in this interpreter."""
    return [sys.executable, "-m", "monai.bundle", "run", workflow, "--config_file", config_file_list(config_files), *command_line(overrides)]


def run_bundle(workflow: str, config_files: Sequence[str | os.PathLike], overrides: dict, log: str | os.PathLike, in_process: bool | None = None) -> None:
    """`python -m monai.bundle run WORKFLOW --config_file [...] --KEY VALUE ...`, its output in `log`."""
    log = Path(log)
    files = [str(f) for f in config_files]
    if in_process is None:
        in_process = os.environ.get("XCT_IN_PROCESS", "") == "1"
    if in_process:
        from monai.bundle import run

        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as conf:
            conf.write(_FILE_LOGGING.format(path=str(log)))
        try:
            run(workflow, config_file=files, logging_file=conf.name, **overrides)
        except Exception as err:
            raise RuntimeError(f"{workflow} failed ({type(err).__name__}); see {log}") from err
        finally:
            os.unlink(conf.name)
        return
    with open(log, "w") as out:
        result = subprocess.run(bundle_command(workflow, files, overrides), stdout=out, stderr=subprocess.STDOUT)
    if result.returncode:
        raise RuntimeError(f"{workflow} failed (exit {result.returncode}); see {log}")
