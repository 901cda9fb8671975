"""The acquisition augmentation overlay: every transform changes the grey values (never the labels) and joins the train chain."""

import numpy as np
import pytest
import torch
from conftest import CONFIGS


def _parsed(*names):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / n) for n in names])
    return parser


@pytest.mark.parametrize("spatial", [(48, 48), (5, 48, 48)])
def test_each_acquisition_augmentation_changes_the_image_and_not_the_labels(spatial):
    transforms = _parsed("train.json", "augment/acquisition.json").get_parsed_content("acquisition_augmentations")
    assert len(transforms) == 8
    generator = torch.Generator().manual_seed(0)
    image = 0.3 + 0.4 * torch.rand((1, *spatial), generator=generator)
    label = torch.randint(0, 3, (1, *spatial), generator=generator)
    for transform in transforms:
        transform.prob = 1.0
        transform.set_random_state(0)
        out = transform({"image": image.clone(), "label": label.clone()})
        changed = torch.as_tensor(out["image"]).float()
        assert changed.shape == image.shape and torch.isfinite(changed).all(), type(transform).__name__
        assert (changed - image).abs().max() > 1e-3, f"{type(transform).__name__} left the image unchanged"
        assert torch.equal(torch.as_tensor(out["label"]), label), f"{type(transform).__name__} changed the labels"


def test_the_overlay_joins_the_train_chain_and_the_default_has_none():
    default = _parsed("train.json").get_parsed_content("train#preprocessing").flatten().transforms
    augmented = _parsed("train.json", "augment/acquisition.json").get_parsed_content("train#preprocessing").flatten().transforms
    assert len(augmented) == len(default) + 8
    assert [type(t).__name__ for t in augmented[len(default):]][0] == "RandAdjustContrastd"
    assert np.all([type(a) is type(b) for a, b in zip(default, augmented)])


def test_training_with_the_overlay_runs_on_2_5d_crops(tiny_dataset, tmp_path):
    from conftest import bundle_run, config_list

    bundle_run("run", "training", "--config_file", config_list("train.json", "augment/acquisition.json"),
               "--dataset_dir", str(tiny_dataset), "--output_dir", str(tmp_path), "--max_epochs", "1", "--steps_per_epoch", "2",
               "--batch_size", "2", "--val_interval", "1", "--network_def#f0", "4", "--num_workers", "0", "--crop_size", "[32,32]",
               "--val_roi", "[256,256]")
    assert (tmp_path / "models" / "model.pt").is_file()
