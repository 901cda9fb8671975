import json
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import CONFIGS, ROOT, bundle_run, config_list

from bundle.checkpoints import CheckpointError, load_weights
from bundle.networks import ModularUNet

TINY = ["--max_epochs", "2", "--steps_per_epoch", "2", "--batch_size", "2", "--val_interval", "1", "--network_def#f0", "4", "--num_workers", "0"]
VARIANTS = {
    "2d": (["train.json", "variants/2d.json"], ["--crop_size", "[32,32]", "--val_roi", "[256,256]"], dict(in_channels=1)),
    "2.5d": (["train.json"], ["--crop_size", "[32,32]", "--val_roi", "[256,256]"], dict(in_channels=5)),
    "3d": (["train.json", "variants/3d.json"], ["--crop_size", "[16,16,16]", "--val_roi", "[16,16,16]", "--z_halo", "4"], dict(spatial_dims=3)),
}


def train(dataset, output, variant="2d", *extra):
    configs, overrides, _ = VARIANTS[variant]
    return bundle_run("run", "training", "--config_file", config_list(*configs), "--dataset_dir", str(dataset), "--output_dir", str(output),
                      *TINY, *overrides, *extra)


def first_epoch_losses(log: str) -> list[str]:
    return re.findall(r"Epoch: 1/\d+, Iter: \d+/\d+ -- train_loss: ([0-9.]+)", log)


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_run_writes_a_loadable_model(tiny_dataset, tmp_path, variant):
    result = train(tiny_dataset, tmp_path, variant)
    assert "val_mean_iou" in result.stdout + result.stderr
    model = tmp_path / "models" / "model.pt"
    assert model.is_file() and (tmp_path / "models" / "checkpoint.pt").is_file()
    load_weights(ModularUNet(f0=4, **VARIANTS[variant][2]), model)
    sidecar = (tmp_path / "models" / "model.json").read_text()
    assert '"grey_window": [\n    0.0,\n    255.0\n  ]' in sidecar and f'"variant": "{variant}"' in sidecar
    assert list((tmp_path / "tensorboard").glob("events.*"))


def test_same_seed_same_first_epoch_loss_and_resume_continues(tiny_dataset, tmp_path):
    first = train(tiny_dataset, tmp_path / "a")
    second = train(tiny_dataset, tmp_path / "b")
    losses = first_epoch_losses(first.stdout + first.stderr)
    assert losses and losses == first_epoch_losses(second.stdout + second.stderr)
    resumed = train(tiny_dataset, tmp_path / "a", "2d", "--max_epochs", "3", "--resume", "true")
    log = resumed.stdout + resumed.stderr
    assert "Restored all variables" in log
    assert "Epoch: 3/3" in log and "Epoch: 1/3" not in log


def test_fine_tuning_loads_every_key_and_refuses_another_variant(tiny_dataset, tmp_path):
    train(tiny_dataset, tmp_path / "base")
    model = tmp_path / "base" / "models" / "model.pt"
    result = train(tiny_dataset, tmp_path / "tuned", "2d", "--pretrained", str(model), "--max_epochs", "1")
    assert "loaded all" in result.stdout + result.stderr
    assert "grey_percentiles" not in json.loads((tmp_path / "tuned" / "models" / "model.json").read_text())
    with pytest.raises(CheckpointError, match="does not fit the network"):
        load_weights(ModularUNet(f0=4, in_channels=5), model)
    train(tiny_dataset, tmp_path / "frozen", "2d", "--pretrained", str(model), "--max_epochs", "1", "--frozen", '["encoder"]')
    before, after = torch.load(model, weights_only=True), torch.load(tmp_path / "frozen" / "models" / "checkpoint.pt", weights_only=True)["model"]
    parameters = {name for name, _ in ModularUNet(f0=4).named_parameters()}
    changed = {name for name in parameters if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith(("bottom.", "ups.", "decoder.", "head.")) for name in changed), sorted(changed)
    log = run_expecting_failure("run", "training", "--config_file", config_list(*VARIANTS["2d"][0]), "--dataset_dir", str(tiny_dataset),
                                "--output_dir", str(tmp_path / "wings"), *TINY, "--pretrained", str(model), "--frozen", '["wings"]')
    assert "['wings'] are not parts of the network" in log.strip().splitlines()[-1]


def test_a_2d_model_starts_a_2_5d_and_a_wider_one_computing_the_same_until_trained(tiny_dataset, tmp_path):
    train(tiny_dataset, tmp_path / "base", "2d", "--max_epochs", "1")
    model = tmp_path / "base" / "models" / "model.pt"
    flat = load_weights(ModularUNet(f0=4), model).eval()
    slab = torch.rand(2, 5, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = flat(slab[:, 2:3])
        for wider in (ModularUNet(f0=4, in_channels=5), ModularUNet(f0=6, in_channels=5), ModularUNet(f0=8)):
            wide = load_weights(wider, model, widen=True).eval()
            torch.testing.assert_close(wide(slab if wider.in_channels == 5 else slab[:, 2:3]), expected)
    assert wide.head.weight[:, 8:].abs().sum() == 0 and wide.encoder[0].conv1.weight[4:].abs().sum() > 0
    torch.save(wide.state_dict(), tmp_path / "f8.pt")
    with pytest.raises(CheckpointError, match="f8.pt: cannot widen into this network: .* does not fit inside"):
        load_weights(ModularUNet(f0=4), tmp_path / "f8.pt", widen=True)
    with pytest.raises(CheckpointError, match="cannot widen .* conv='separable'"):
        load_weights(ModularUNet(f0=8, conv="separable"), model, widen=True)
    result = train(tiny_dataset, tmp_path / "wide", "2.5d", "--pretrained", str(model), "--widen_pretrained", "true", "--max_epochs", "1")
    assert "loaded all" in result.stdout + result.stderr
    trained = torch.load(tmp_path / "wide" / "models" / "model.pt", weights_only=True)["encoder.0.conv1.weight"]
    assert trained.shape[1] == 5 and trained[:, [0, 1, 3, 4]].abs().sum() > 0
    log = run_expecting_failure("run", "training", "--config_file", config_list(*VARIANTS["2.5d"][0]), "--dataset_dir", str(tiny_dataset),
                                "--output_dir", str(tmp_path / "narrow"), *TINY, *VARIANTS["2.5d"][1], "--pretrained", str(model))
    assert "does not fit the network" in log.strip().splitlines()[-1]


def test_precise_bn_re_estimates_a_models_batch_norm_statistics_over_an_epoch_of_training_crops(tiny_dataset, tmp_path):
    train(tiny_dataset, tmp_path / "base", "2.5d", "--max_epochs", "1")
    model = tmp_path / "base" / "models" / "model.pt"
    args = ["--config_file", config_list("train.json"), "--dataset_dir", str(tiny_dataset), "--network_def#f0", "4", "--crop_size", "[32,32]",
            "--batch_size", "2", "--steps_per_epoch", "3", "--num_workers", "0"]
    bundle_run("run", "precise_bn", *args, "--output_dir", str(tmp_path / "precise"), "--pretrained", str(model))
    before, after = torch.load(model, weights_only=True), torch.load(tmp_path / "precise" / "models" / "model.pt", weights_only=True)
    assert before.keys() == after.keys()
    statistics = {k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert all(torch.equal(before[k], after[k]) for k in before.keys() - statistics)
    assert all(not torch.equal(before[k], after[k]) for k in statistics if k.endswith("running_mean"))
    assert {after[k].item() for k in statistics if k.endswith("num_batches_tracked")} == {3}
    base, sidecar = (json.loads((folder / "models" / "model.json").read_text()) for folder in (tmp_path / "base", tmp_path / "precise"))
    assert sidecar.pop("batch_norm_statistics") | {"seconds": 0} == {"from": str(model), "dataset_dir": str(tiny_dataset), "batches": 3, "crops": 6, "seconds": 0}
    assert sidecar == base
    load_weights(ModularUNet(f0=4, in_channels=5), tmp_path / "precise" / "models" / "model.pt")
    log = run_expecting_failure("run", "precise_bn", *args, "--output_dir", str(tmp_path / "none"))
    assert log.strip().splitlines()[-1].endswith("precise_bn re-estimates the statistics of a trained model: give it with --pretrained MODEL.pt.")
    log = run_expecting_failure("run", "precise_bn", *args, "--output_dir", str(tmp_path / "base"), "--pretrained", str(model))
    assert "would overwrite --pretrained" in log.strip().splitlines()[-1]
    assert torch.equal(torch.load(model, weights_only=True)["head.weight"], before["head.weight"])


def test_precise_statistics_before_each_validation_leave_training_as_it_was(tiny_dataset, tmp_path):
    def run(name, *extra):  # with the acquisition augmentations: dictionary transforms holding random array transforms
        return bundle_run("run", "training", "--config_file", config_list("train.json", "augment/acquisition.json"), "--dataset_dir", str(tiny_dataset),
                          "--output_dir", str(tmp_path / name), *TINY, *VARIANTS["2.5d"][1], *extra)

    plain, precise = run("plain"), run("precise", "--precise_bn_batches", "3")
    losses = [re.findall(r"train_loss: ([0-9.]+)", run.stdout + run.stderr) for run in (plain, precise)]
    assert len(losses[0]) == 4 and losses[0] == losses[1]
    assert "batch-norm statistics over 3 training batches" in precise.stdout + precise.stderr
    final = [torch.load(tmp_path / run / "models" / "checkpoint.pt", weights_only=True)["model"] for run in ("plain", "precise")]
    statistics = {k for k in final[0] if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0].keys() - statistics)
    best = [torch.load(tmp_path / run / "models" / "model.pt", weights_only=True) for run in ("plain", "precise")]
    assert {best[1][k].item() for k in statistics if k.endswith("num_batches_tracked")} == {3}
    assert {best[0][k].item() for k in statistics if k.endswith("num_batches_tracked")} <= {2, 4}
    sidecars = [json.loads((tmp_path / run / "models" / "model.json").read_text()) for run in ("plain", "precise")]
    assert sidecars[1].pop("batch_norm_statistics") == {"batches": 3, "when": "before each validation"}
    assert sidecars[0] == sidecars[1]
    log = run_expecting_failure("run", "training", "--config_file", config_list("train.json"), "--dataset_dir", str(tiny_dataset),
                                "--output_dir", str(tmp_path / "bad"), *TINY, *VARIANTS["2.5d"][1], "--precise_bn_batches", "-1")
    assert log.strip().splitlines()[-1].endswith("--precise_bn_batches -1 must be >= 0 and --val_interval 1 >= 1")


def test_fine_tuning_keeps_the_pretrained_models_grey_percentiles_unless_told_otherwise(tiny_dataset, tmp_path):
    train(tiny_dataset, tmp_path / "base", "2d", "--grey_percentiles", "[1.0, 99.0]", "--max_epochs", "1")
    model = str(tmp_path / "base" / "models" / "model.pt")
    train(tiny_dataset, tmp_path / "kept", "2d", "--pretrained", model, "--max_epochs", "1")
    bundle_run("run", "training", "--config_file", config_list(*VARIANTS["2d"][0], "augment/fixed_window.json"), "--dataset_dir", str(tiny_dataset),
               "--output_dir", str(tmp_path / "fixed"), *TINY, *VARIANTS["2d"][1], "--pretrained", model, "--max_epochs", "1")
    assert json.loads((tmp_path / "kept" / "models" / "model.json").read_text())["grey_percentiles"] == [1.0, 99.0]
    assert "grey_percentiles" not in json.loads((tmp_path / "fixed" / "models" / "model.json").read_text())


def run_expecting_failure(*args):
    result = bundle_run(*args, timeout=300, check=False)
    assert result.returncode != 0
    assert "Epoch: 1/" not in result.stdout + result.stderr
    return result.stdout + result.stderr


def test_resume_false_given_as_text_starts_afresh(tiny_dataset, tmp_path):
    log = train(tiny_dataset, tmp_path, "2d", "--max_epochs", "1", "--resume", "false")
    assert "Restored" not in log.stdout + log.stderr


def test_bad_training_inputs_fail_before_any_step(tiny_dataset, tmp_path):
    base = ["run", "training", "--config_file", str(CONFIGS / "train.json"), "--dataset_dir", str(tiny_dataset), "--output_dir", str(tmp_path), *TINY]
    log = run_expecting_failure(*base, "--crop_size", "[128,128]", "--val_roi", "[256,256]")
    assert "is larger than the volume" in log and "phantom.raw" in log
    log = run_expecting_failure(*base, "--crop_size", "[32,32]", "--resume", "true")
    assert "nothing to resume from" in log and "checkpoint.pt" in log
    configs = config_list("train.json", "variants/3d.json")
    log = run_expecting_failure("run", "training", "--config_file", configs, "--dataset_dir", str(tiny_dataset), "--output_dir", str(tmp_path), *TINY, "--crop_size", "[40,16,16]")
    assert "fewer than the crop depth 40" in log


@pytest.mark.slow
def test_two_process_gloo_training(tiny_dataset, tmp_path):
    configs = config_list("train.json", "multi_gpu_train.json")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", "-m", "monai.bundle", "run", "training"]
    args = ["--config_file", configs, "--dataset_dir", str(tiny_dataset), "--output_dir", str(tmp_path), *TINY, "--crop_size", "[32,32]", "--val_roi", "[256,256]", "--val_slab", "1"]
    result = subprocess.run(command + args, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "models" / "model.pt").is_file()
    assert (tmp_path / "tensorboard").is_dir() and not list((tmp_path / "tensorboard").glob("rank*")), "only rank 0 logs"
    assert (result.stdout + result.stderr).count("Epoch[1] Metrics") == 1, "validation stats printed by one rank"
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)


def test_config_workflow_train_properties_resolve_with_no_data_on_disk(tmp_path):
    """A client pipeline resolves the training workflow before any data exists; the data is read when training starts."""
    from monai.bundle import ConfigWorkflow

    absent = tmp_path / "absent"
    workflow = ConfigWorkflow(config_file=str(CONFIGS / "train.json"), meta_file=str(CONFIGS / "metadata.json"), workflow_type="train",
                              dataset_dir=str(absent), output_dir=str(tmp_path / "run"))
    workflow.initialize()
    assert not workflow.check_properties()
    assert workflow.max_epochs == 200 and workflow.val_interval == 10
    assert not absent.exists()
