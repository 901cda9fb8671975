"""Cutting the work changes nothing: sub-box, tile size, slab size, TTA; the receptive field; the volume's edge."""

import json

import numpy as np
import pytest
import torch
from conftest import bundle_run, config_list

from bundle.inference import OverlapTileInferer, context_margin, receptive_radius, tile_plan
from bundle.io import open_volume
from bundle.networks import ModularUNet, inference_ready
from bundle.phantom import make_phantom
from bundle.variants import variant_config_names


@pytest.mark.parametrize(("u_depth", "sampling"), [(2, "learnable"), (3, "learnable"), (3, "rigid")])
def test_receptive_radius_bounds_the_impulse_response_and_is_reached(u_depth, sampling):
    torch.manual_seed(0)
    net = inference_ready(ModularUNet(f0=2, u_depth=u_depth, down=sampling, up=sampling), fold_bn=False)
    size, radius = 192, receptive_radius(u_depth)
    reach = 0
    with torch.inference_mode():
        base = net(torch.zeros(1, 1, size, size))
        for offset in range(2**u_depth):
            x = torch.zeros(1, 1, size, size)
            x[0, 0, size // 2 + offset, size // 2 + offset] = 1.0
            changed = (net(x) - base).abs().amax(dim=(0, 1)) > 0
            rows = torch.nonzero(changed.any(1)).flatten()
            reach = max(reach, int((rows - (size // 2 + offset)).abs().max()))
    assert reach <= radius and reach >= radius - 2**u_depth
    assert context_margin(u_depth) % 2**u_depth == 0 and context_margin(u_depth) >= radius


def test_overlap_tiles_give_one_pass_of_the_network_whatever_the_tile_size():
    torch.manual_seed(1)
    net = inference_ready(ModularUNet(f0=2), fold_bn=True)
    x = torch.rand(2, 1, 200, 180)
    with torch.inference_mode():
        whole = net(torch.nn.functional.pad(x, (0, 4)))[..., :180]
        for roi in ((136, 136), (256, 256), (512, 512), (144, 200)):
            tiled = OverlapTileInferer(roi, 64, sw_batch_size=3)(x, net)
            torch.testing.assert_close(tiled, whole, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="at least 136"):
        OverlapTileInferer((128, 128), 64)


def test_tile_plan_covers_the_extent_once_and_keeps_cores_a_margin_from_inner_borders():
    for extent, tile, margin in ((512, 512, 64), (2048, 512, 64), (200, 136, 64), (1000, 256, 32)):
        plan = tile_plan(extent, tile, margin)
        assert plan[0][1] == 0 and plan[-1][2] == extent
        assert all(a[2] == b[1] for a, b in zip(plan, plan[1:]))
        for origin, start, end in plan:
            size = min(tile, extent)
            assert origin % 8 == 0 and 0 <= origin and origin + size <= extent
            assert (origin == 0 or start - origin >= margin) and (origin + size == extent or origin + size - end >= margin)
    assert len(tile_plan(512, 512, 64)) == 1 and len(tile_plan(2048, 512, 64)) == 5


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A 16 x 170 x 150 phantom (planes not a multiple of the tile) and a fixed-seed f0=4 model per 2D variant."""
    folder = tmp_path_factory.mktemp("seamless")
    make_phantom(folder / "data", (16, 170, 150), seed=7)
    models = {}
    for variant, channels in (("2d", 1), ("2.5d", 5)):
        torch.manual_seed(4)
        net = ModularUNet(f0=4, in_channels=channels)
        net.train()
        with torch.no_grad():
            net(torch.rand(4, channels, 32, 32))
        models[variant] = folder / f"{variant}.pt"
        torch.save(net.state_dict(), models[variant])
    return folder / "data" / "phantom.raw", models


def run(scan, output, variant, *extra):
    path, models = scan
    configs = ["inference.json", *variant_config_names(variant)]
    bundle_run("run", "inference", "--config_file", config_list(*configs), "--input_path", str(path), "--output_dir", str(output),
               "--ckpt_path", str(models[variant]), "--network_def#f0", "4", "--precision", "fp32", "--progress", "False", *extra)
    return open_volume(output / "phantom.seg.raw").read()


@pytest.mark.parametrize("variant", ["2d", "2.5d"])
def test_roi_tile_and_slab_size_give_the_whole_volume_labels(scan, tmp_path, variant):
    whole = run(scan, tmp_path / "whole", variant, "--roi_size", "[512,512]")
    box = run(scan, tmp_path / "box", variant, "--roi", "[[5,13],[37,141],[3,77]]", "--slab", "3", "--roi_size", "[512,512]")
    assert (box == whole[5:13, 37:141, 3:77]).mean() >= 0.9999
    tiles = run(scan, tmp_path / "tiles", variant, "--roi_size", "[192,256]", "--slab", "5")
    assert (tiles == whole).mean() >= 0.9999


def test_tta_labels_do_not_depend_on_the_box(scan, tmp_path):
    whole = run(scan, tmp_path / "whole", "2d", "--tta", "True")
    box = run(scan, tmp_path / "box", "2d", "--tta", "True", "--roi", "[[2,6],[11,120],[40,150]]", "--slab", "3")
    assert (box == whole[2:6, 11:120, 40:184]).mean() >= 0.9999


def test_the_shipped_model_scores_the_frame_like_the_interior(tmp_path):
    """The shipped model on a phantom the tests make: quality floor, and the outer 2 voxels of each slice not worse than 1.5x."""
    make_phantom(tmp_path / "data", (40, 160, 160), seed=21)
    bundle_run("run", "evaluate", "--config_file", config_list("inference.json", "evaluate.json"), "--dataset_dir", str(tmp_path / "data"),
               "--output_dir", str(tmp_path / "eval"), "--precision", "fp32")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    # on this phantom seed (not in training) the 2D weights (0.8.0) measured 98.4 / 93.5 / 37.9, frame 1.21x the interior;
    # the default 2.5D weights (0.9.0) 98.6 / 94.0 / 50.2, frame 1.44x
    assert metrics["iou"]["matrix"] > 0.95 and metrics["iou"]["fibre"] > 0.88 and metrics["iou"]["porosity"] > 0.25, metrics["iou"]
    errors = open_volume(tmp_path / "eval" / "phantom.test.error_volume.raw").read() != 0
    frame = np.zeros(errors.shape[1:], bool)
    frame[:2], frame[-2:], frame[:, :2], frame[:, -2:] = True, True, True, True
    assert errors[:, frame].mean() <= 1.5 * errors[:, ~frame].mean() + 1e-3
