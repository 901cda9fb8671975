"""`python -m monai.bundle ...` for the tests, without paying MONAI's 5-6 s of imports per run.

Started once per test process (tests/conftest.py `bundle_run`), it imports torch, MONAI and the bundle, then
forks one child per request: the child takes the request's working directory, environment and arguments,
sends its output to the request's files and runs `monai.bundle` as `python -m` runs it, so a run's output,
exit code and crash stay its own, as in a subprocess. The server never computes, so no OpenMP pool exists
when it forks.

Protocol: one JSON request per line on stdin, {"args", "cwd", "env", "stdout", "stderr"}; on stdout one line
{"pid"} when the child starts, then one line {"returncode"} (negative: killed by that signal) when it ends.
"""

from __future__ import annotations

import json
import os
import runpy
import sys

import ignite.engine  # noqa: F401 - preloaded for the children
import monai.bundle
import torch  # noqa: F401 - preloaded for the children

import bundle.inference.predictor
import bundle.inference.streamed  # noqa: F401 - preloaded for the children
from bundle.errors import install_cause_hook

MAIN = os.path.join(os.path.dirname(monai.bundle.__file__), "__main__.py")


def run_child(request: dict) -> None:
    """In the forked child: become `python -m monai.bundle ARGS` started in CWD with ENV; never returns."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    sys.path[0] = request["cwd"]
    sys.argv = [MAIN, *request["args"]]
    install_cause_hook()
    runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    sys.exit(0)


def serve() -> None:
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            replies.close()
            run_child(request)
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")


if __name__ == "__main__":
    serve()
