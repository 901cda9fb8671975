"""Shared fixtures: tiny phantoms written to disk once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bundle.phantom import make_phantom

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A 48x64x64 phantom with dataset.json (train 32 slices, val 3, test 7)."""
    out = tmp_path_factory.mktemp("tiny_phantom")
    make_phantom(out, (48, 64, 64), seed=3)
    return out


def bundle_run(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m monai.bundle ARGS` in a subprocess; fails the test with its output on a non-zero exit."""
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "2", **(env or {})},
    )
    if result.returncode != 0:
        pytest.fail(f"monai.bundle {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def run_script(script: str, *args: str, timeout: int = 900) -> str:
    """`python scripts/SCRIPT ARGS` in a subprocess; its stdout, or a test failure with its output."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(f"{script} {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def config_list(*names: str) -> str:
    """A MONAI list of config files, e.g. config_list('train.json', 'variants/3d.json')."""
    return "[" + ",".join(f"'{CONFIGS / n}'" for n in names) + "]"
