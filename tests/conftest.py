"""Shared fixtures: tiny phantoms written to disk once per session."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest
import torch

from bundle.launcher import config_file_list
from bundle.networks import ModularUNet
from bundle.phantom import make_phantom
from bundle.variants import variant_config_names

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def pytest_configure(config) -> None:
    """Under pytest-xdist, each worker (and every process it starts) computes on its own share of the CPUs: two workers
    of two compute threads each on two cores would oversubscribe them, and OpenMP threads that wait spinning for a
    core slow every test down. `bundle.runtime` reads the affinity, so each worker's runs use its share."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if worker.startswith("gw") and os.environ.get("XCT_TEST_PIN", "1") == "1" and count > 1 and len(cpus) >= count:
        os.sched_setaffinity(0, cpus[int(worker[2:]) % count :: count])


def pytest_collection_modifyitems(items) -> None:
    """The longest tests first: pytest-xdist hands the head of the list out first and the tail one test at a time,
    so short tests at the end fill the gaps and the workers finish together."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory) -> Path:
    """Exported and quantised models and backend timings of this test session, kept out of the user's cache."""
    folder = tmp_path_factory.mktemp("xct_cache")
    os.environ["XCT_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def in_process_studies() -> None:
    """Studies run their workflows in the test's interpreter (and in a script's, for scripts the tests start):
    dozens of tiny runs then skip MONAI's start-up each (`bundle.launcher`)."""
    os.environ["XCT_IN_PROCESS"] = "1"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A 48x64x64 phantom with dataset.json (train 32 slices, val 3, test 7)."""
    out = tmp_path_factory.mktemp("tiny_phantom")
    make_phantom(out, (48, 64, 64), seed=3)
    return out


class _Captured(io.StringIO):
    """What an in-process run printed, stdout or stderr."""


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger))]
    return [h for logger in loggers for h in logger.handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def run_in_process(args: tuple[str, ...]) -> subprocess.CompletedProcess | None:
    """`monai.bundle run WORKFLOW --KEY VALUE ...` in this interpreter, its values parsed as fire parses them on the
    command line and everything it prints or logs captured; None for anything else (another command, odd flags).

    Log handlers that MONAI and Ignite attach to the console (once per process, bound to the stream of that
    moment) write into this run's capture while it runs, and into the console again afterwards. A failed run's
    exception is the result's `error`."""
    if len(args) < 2 or args[0] != "run" or len(args[2:]) % 2 or not all(a.startswith("--") for a in args[2::2]):
        return None
    from fire.parser import DefaultParseValue
    from monai.bundle import run

    overrides = {key[2:]: DefaultParseValue(value) for key, value in zip(args[2::2], args[3::2])}
    out, err = _Captured(), _Captured()
    console = {sys.stdout: out, sys.stderr: err, sys.__stdout__: out, sys.__stderr__: err}
    redirected = {h: h.stream for h in _stream_handlers() if h.stream in console or isinstance(h.stream, _Captured)}
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    code, error = 0, None
    try:
        for handler, stream in redirected.items():
            handler.setStream(console.get(stream, out))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run(args[1], **overrides)
            except Exception as raised:
                traceback.print_exc()
                code, error = 1, raised
    finally:
        for handler in _stream_handlers():
            if handler.stream in (out, err):
                original = redirected.get(handler)
                handler.setStream(original if original in console else sys.stdout if handler.stream is out else sys.stderr)
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        for handler in [h for h in handlers if h not in root.handlers]:
            root.addHandler(handler)
        root.setLevel(level)
    result = subprocess.CompletedProcess(["monai.bundle", *args], code, out.getvalue(), err.getvalue())
    result.error = error
    return result


class _ForkServer:
    """tests/cli_fork_server.py, started on first use by this test process: each run forks from its warm imports."""

    process: subprocess.Popen | None = None

    @classmethod
    def run(cls, args: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
        if cls.process is None or cls.process.poll() is not None:
            cls.process = subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "cli_fork_server.py")], cwd=ROOT, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": env["OMP_NUM_THREADS"]},
            )
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            request = {"args": args, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
            cls.process.stdin.write(json.dumps(request) + "\n")
            cls.process.stdin.flush()
            pid = json.loads(cls.process.stdout.readline())["pid"]
            if not select.select([cls.process.stdout], [], [], timeout)[0]:
                os.kill(pid, signal.SIGKILL)
                cls.process.stdout.readline()
                raise subprocess.TimeoutExpired(["monai.bundle", *args], timeout)
            code = json.loads(cls.process.stdout.readline())["returncode"]
            return subprocess.CompletedProcess(["monai.bundle", *args], code, out.read_text(), err.read_text())


def bundle_run(
    *args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None, cli: bool = False, check: bool = True
) -> subprocess.CompletedProcess:
    """`python -m monai.bundle ARGS`: forked from a process that has MONAI imported (no 5-6 s start-up), or with
    `cli` a fresh interpreter; with `check`, fails the test with its output on a non-zero exit.

    Not in the test's own interpreter: there a sequence of runs (OpenVINO, ONNX Runtime, napari in one process)
    left the worker to die by SIGSEGV when it next started a process."""
    environment = {**os.environ, "OMP_NUM_THREADS": "2", **(env or {})}
    if cli:
        result = subprocess.run(
            [sys.executable, "-m", "monai.bundle", *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout, env=environment
        )
    else:
        result = _ForkServer.run(list(args), cwd or ROOT, environment, timeout)
    if check and result.returncode != 0:
        pytest.fail(f"monai.bundle {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


TINY_NETWORK = {"network_def#f0": 4, "backend": "torch", "precision": "fp32", "progress": False, "roi_size": [256, 256]}


def run_workflow(workflow: str, configs: list[str], **overrides):
    """`monai.bundle run WORKFLOW` in this interpreter (no 5-s start-up), with f0=4 networks, PyTorch in fp32 and
    no progress bar unless overridden; paths may be Path objects. Returns what MONAI's `run` returns."""
    from monai.bundle import run

    defaults = dict(TINY_NETWORK) if workflow != "training" else {"network_def#f0": 4, "precision": "fp32"}
    settings = {**defaults, **{k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()}}
    return run(workflow, config_file=[str(CONFIGS / name) for name in configs], **settings)


def script_module(name: str):
    """scripts/NAME.py imported as a module, for the functions its commands are built from."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(script: str, *args: str, timeout: int = 900, cli: bool = False) -> str:
    """`python scripts/SCRIPT ARGS`: its stdout, or a test failure with its output.

    Its commands run in this interpreter (through the script's own `run_commands`), unless `cli`."""
    if cli:
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / script), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        stdout, stderr, code = result.stdout, result.stderr, result.returncode
    else:
        from bundle.cli import run_commands

        out, err, code = _Captured(), _Captured(), 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run_commands(script_module(script.removesuffix(".py")).COMMANDS, argv=list(args), name=script)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
            except Exception:
                traceback.print_exc()
                code = 1
        stdout, stderr = out.getvalue(), err.getvalue()
    if code != 0:
        pytest.fail(f"{script} {' '.join(args)} failed:\n{stdout[-2000:]}\n{stderr[-4000:]}")
    return stdout


def config_list(*names: str) -> str:
    """A MONAI list of config files, e.g. config_list('train.json', 'variants/3d.json')."""
    return config_file_list([CONFIGS / n for n in names])


VARIANT_NETS = {"2d": dict(in_channels=1), "2.5d": dict(in_channels=5), "3d": dict(spatial_dims=3)}
VARIANT_ARGS = {
    "2d": ["--roi_size", "[256,256]"],
    "2.5d": ["--roi_size", "[256,256]"],
    "3d": ["--roi_size", "[16,32,32]", "--z_halo", "4"],
}


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Untrained but fixed-seed f0=4 weights per variant: inference plumbing does not need a good model."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for variant, kwargs in VARIANT_NETS.items():
        torch.manual_seed(1)
        net = ModularUNet(f0=4, **kwargs)
        net.train()
        with torch.no_grad():
            net(torch.rand(4, kwargs.get("in_channels", 1), *(16,) * kwargs.get("spatial_dims", 2)))
        paths[variant] = folder / f"model_{variant}.pt"
        torch.save(net.state_dict(), paths[variant])
    return paths


def infer(input_path, output, model, variant="2d", *extra, env=None):
    configs = ["inference.json", *variant_config_names(variant)]
    return bundle_run(
        "run", "inference", "--config_file", config_list(*configs), "--input_path", str(input_path), "--output_dir", str(output),
        "--ckpt_path", str(model), "--network_def#f0", "4", *VARIANT_ARGS[variant], *extra, env=env,
    )
