"""Shared fixtures: tiny phantoms written to disk once per session."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bundle.networks import ModularUNet
from bundle.phantom import make_phantom

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


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
    configs = ["inference.json"] + ([f"variants/{variant}.json"] if variant != "2d" else [])
    return bundle_run(
        "run", "inference", "--config_file", config_list(*configs), "--input_path", str(input_path), "--output_dir", str(output),
        "--ckpt_path", str(model), "--network_def#f0", "4", *VARIANT_ARGS[variant], *extra, env=env,
    )
