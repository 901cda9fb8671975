"""Each bad-input case of docs/reliability.md: the last line of stderr is the bundle's message naming the file or the
flag (not MONAI's wrapper, not a built-in error it wraps, not a progress bar), and no final output is written.

A few cases run through `python -m monai.bundle` itself (one in a fresh interpreter, the others forked from the tests'
warm one), the hook that prints the last line included; the others run in this interpreter, where the same line is
the hook's `last_line` of the raised error."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIGS, bundle_run, config_list, run_in_process

from bundle.errors import last_line
from bundle.networks import ModularUNet

THROUGH_THE_COMMAND_LINE = ("missing input", "NaN with the progress bar open", "model of another variant", "disk too small")
IN_A_FRESH_INTERPRETER = "missing input"


def mount_tmpfs(folder: Path, options: str) -> bool:
    folder.mkdir(parents=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def cases(tiny_dataset, models, tmp_path_factory):
    """name -> (monai.bundle arguments, the start of the last line, text the last line must also hold...)."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    torch.manual_seed(0)
    torch.save(ModularUNet(f0=4, in_channels=1).state_dict(), tmp / "model_2d.pt")
    (tmp / "model_2d.json").write_text(json.dumps({"grey_window": [0, 255], "variant": "2d", "network": {"spatial_dims": 2, "in_channels": 1, "f0": 4}}))
    (tmp / "broken.pt").write_bytes(models["2.5d"].read_bytes()[:5000])
    (tmp / "short.raw").write_bytes(bytes(100))
    (tmp / "short.raw.info").write_text("NUM_X = 64\nNUM_Y = 64\nNUM_Z = 2\nDATATYPE = uint8\n")
    nan = np.full((6, 64, 64), 120.0, np.float32)
    nan[4, 10, 10] = np.nan
    nan.tofile(tmp / "nan.raw")
    (tmp / "nan.raw.info").write_text("NUM_X = 64\nNUM_Y = 64\nNUM_Z = 6\nDATATYPE = float32\n")
    np.zeros((3, 64, 64), np.uint8).tofile(tmp / "thin.raw")
    (tmp / "thin.raw.info").write_text("NUM_X = 64\nNUM_Y = 64\nNUM_Z = 3\n")
    (tmp / "a_file").write_text("not a folder")
    (tmp / "scan.xyz").write_bytes(bytes(10))
    bad_split = tmp / "bad_split"
    bad_split.mkdir()
    for name in ("phantom.raw", "phantom.raw.info", "phantom.ground_truth.raw", "phantom.ground_truth.raw.info"):
        (bad_split / name).symlink_to(tiny_dataset / name)
    description = json.loads((tiny_dataset / "dataset.json").read_text())
    description["volumes"][0]["splits"]["test"] = [39, 60]
    (bad_split / "dataset.json").write_text(json.dumps(description))

    phantom = str(tiny_dataset / "phantom.raw")
    infer = ["run", "inference", "--config_file", str(CONFIGS / "inference.json"), "--network_def#f0", "4", "--roi_size", "[256,256]",
             "--backend", "torch", "--precision", "fp32"]

    def inference(name, input_path=phantom, ckpt=models["2.5d"], *extra):
        return [*infer, "--input_path", str(input_path), "--output_dir", str(tmp / name), "--ckpt_path", str(ckpt), *extra]

    table = {
        "missing input": (inference("o1", tmp / "nope.raw"), "error: VolumeError: {tmp}/nope.raw: raw volume not found"),
        "unknown format": (inference("o2", tmp / "scan.xyz"), "error: VolumeError: {tmp}/scan.xyz: unknown volume format"),
        "truncated raw": (inference("o3", tmp / "short.raw"), "error: SidecarError: {tmp}/short.raw: file has 100 B"),
        "NaN with the progress bar open": (inference("o4", tmp / "nan.raw", models["2.5d"], "--slab", "3"),
                                           "error: VolumeError: {tmp}/nan.raw: NaN or infinite grey values, first at z 4"),
        "corrupted checkpoint": (inference("o5", phantom, tmp / "broken.pt"), "error: CheckpointError: {tmp}/broken.pt: not a readable PyTorch checkpoint"),
        "missing checkpoint": (inference("o6", phantom, tmp / "missing.pt"), "error: CheckpointError: {tmp}/missing.pt: checkpoint not found", "Train it with"),
        "model of another variant": (inference("o7", phantom, tmp / "model_2d.pt"), "error: CheckpointError: {tmp}/model_2d.pt",
                                     "variant: model 2d, config 2.5d", "in_channels: model 1, config 5", "configs/variants/2d.json"),
        "weights that do not fit": (inference("o14", phantom, models["2d"]), f"error: CheckpointError: {models['2d']}", "does not fit the network"),
        "too few slices for 2.5D": (["run", "inference", "--config_file", str(CONFIGS / "inference.json"), "--network_def#f0", "4",
                                     "--input_path", str(tmp / "thin.raw"), "--output_dir", str(tmp / "o8"), "--ckpt_path", str(models["2.5d"])],
                                    "error: VolumeError: {tmp}/thin.raw: the volume has 3 slice(s), fewer than the 5 slices of context",
                                    "merge configs/variants/2d.json"),
        "output folder is a file": (inference("a_file/out"), "error: OutputError: {tmp}/a_file/out: output folder is not writable"),
        "roi reversed": (inference("o9", phantom, models["2.5d"], "--roi", "[[8,4],[0,64],[0,64]]"),
                         "error: SettingError: --roi axis z is [8, 4]: its start must be below its stop."),
        "roi of two axes": (inference("o10", phantom, models["2.5d"], "--roi", "[[0,8],[0,64]]"), "error: SettingError: --roi has 2 axes"),
        "unknown adaptation": (inference("o15", phantom, models["2.5d"], "--adapt", "banana"), "error: SettingError: --adapt must be one of none, bn, got 'banana'."),
        "roi not a box": (inference("o11", phantom, models["2.5d"], "--roi", "banana"), "error: SettingError: --roi must be three [start, stop] pairs"),
        "roi outside the volume": (inference("o12", phantom, models["2.5d"], "--roi", "[[0,300],[0,64],[0,64]]"),
                                   f"error: SettingError: --roi axis z [0, 300] is outside {phantom}, whose z size is 48"),
        "split outside the volume": (["run", "evaluate", "--config_file", config_list("inference.json", "evaluate.json"), "--dataset_dir", str(bad_split),
                                      "--output_dir", str(tmp / "o13"), "--ckpt_path", str(models["2.5d"]), "--network_def#f0", "4"],
                                     "error: DatasetError: {tmp}/bad_split/dataset.json"),
    }
    if mount_tmpfs(tmp / "read_only", "ro,size=1m"):
        table["read-only mount"] = (inference("read_only/out"), "error: OutputError: {tmp}/read_only/out: output folder is not writable (Read-only file system)")
    if mount_tmpfs(tmp / "tiny_disk", "size=64k"):
        table["disk too small"] = (inference("tiny_disk/out"), "error: OutputError: [Errno 28] {tmp}/tiny_disk/out: this run writes")
    yield tmp, {name: (args, start.format(tmp=tmp), *contains) for name, (args, start, *contains) in table.items()}
    for mount in ("read_only", "tiny_disk"):
        subprocess.run(["umount", str(tmp / mount)], capture_output=True)


@pytest.mark.slow
def test_every_bad_input_ends_with_the_bundles_message(cases):
    tmp, table = cases
    last_lines = {}
    for name, (args, *_) in table.items():
        if name in THROUGH_THE_COMMAND_LINE:
            result = bundle_run(*args, env={"OMP_NUM_THREADS": "1"}, cli=name == IN_A_FRESH_INTERPRETER, check=False)
            last_lines[name] = (result.returncode, result.stderr.rstrip().splitlines()[-1] if result.stderr.strip() else "")
        else:
            result = run_in_process(tuple(args))
            last_lines[name] = (result.returncode, last_line(result.error) if result.error is not None else "")
    wrong = {}
    for name, (code, last) in last_lines.items():
        _, start, *contains = table[name]
        if code == 0 or not last.startswith(start) or not all(c in last for c in contains):
            wrong[name] = f"rc {code}: {last!r}"
    assert set(last_lines) == set(table) and len(set(THROUGH_THE_COMMAND_LINE) & set(table)) >= 3
    assert not wrong, "\n".join(f"{k}: {v}" for k, v in wrong.items())
    assert not list(tmp.rglob("*.seg.raw")) and not list(tmp.rglob("metrics.json"))
