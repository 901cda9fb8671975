import pytest
import torch
from conftest import bundle_run, config_list

from bundle.inference.zstack import ZStackInferer, dihedral, undo_dihedral


def test_dihedral_group_has_eight_distinct_invertible_elements():
    square = torch.arange(9.0).reshape(3, 3)
    assert len({tuple(dihedral(square, i).flatten().tolist()) for i in range(8)}) == 8
    x = torch.rand(2, 3, 5, 7)
    assert all(torch.equal(undo_dihedral(dihedral(x, i), i), x) for i in range(8))


def symmetric_network() -> torch.nn.Module:
    """Per class one 3x3 kernel invariant under the 8 symmetries of the square: an equivariant network."""
    net = torch.nn.Conv2d(1, 3, 3, padding=1)
    with torch.no_grad():
        for c, (a, b, m) in enumerate(((0.5, -1.0, 2.0), (1.0, 0.3, -0.5), (-0.2, 0.7, 0.1))):
            net.weight[c, 0] = torch.tensor([[a, b, a], [b, m, b], [a, b, a]])
        net.bias.copy_(torch.tensor([0.1, -0.2, 0.05]))
    return net.eval()


def test_tta_leaves_an_equivariant_network_unchanged():
    torch.manual_seed(0)
    slab = torch.rand(1, 1, 6, 32, 32)
    plain = ZStackInferer((32, 32), margin=8)
    augmented = ZStackInferer((32, 32), margin=8, tta=True)
    with torch.inference_mode():
        expected = torch.softmax(plain(slab, symmetric_network()), 1)
        got = torch.softmax(augmented(slab, symmetric_network()), 1)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_tta_changes_a_direction_sensitive_network():
    net = torch.nn.Conv2d(1, 3, (3, 1), padding=(1, 0), bias=False)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[0, 0, :, 0] = torch.tensor([-1.0, 0.0, 1.0])
    slab = torch.arange(32.0).repeat(32, 1).T[None, None, None].repeat(1, 1, 2, 1, 1) * 0.2
    with torch.inference_mode():
        plain = torch.softmax(ZStackInferer((32, 32), margin=8)(slab, net), 1)
        augmented = torch.softmax(ZStackInferer((32, 32), margin=8, tta=True)(slab, net), 1)
    assert not torch.allclose(plain, augmented, atol=1e-3)


def test_multi_axis_fusion_gives_the_expected_mean_of_probabilities():
    """A network reading the derivative along a plane's first axis, on a volume that ramps along z only."""
    net = torch.nn.Conv2d(1, 3, (3, 1), padding=(1, 0), bias=False)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[0, 0, :, 0] = torch.tensor([-1.0, 0.0, 1.0])
    slope, halo, depth = 0.3, 4, 4
    z = torch.arange(depth + 2 * halo, dtype=torch.float32)
    slab = (z * slope)[:, None, None].expand(-1, 16, 16)[None, None].contiguous()
    inferer = ZStackInferer((16, 16), z_halo=halo, context=0, margin=0, axes=("z", "y", "x"))
    with torch.inference_mode():
        fused = torch.softmax(inferer(slab, net), 1)[0, :, :, 2:-2, 2:-2]
    along_z = torch.tensor([1 / 3, 1 / 3, 1 / 3])
    along_y = torch.softmax(torch.tensor([2 * slope, 0.0, 0.0]), 0)
    expected = (along_z + along_y + along_z) / 3
    torch.testing.assert_close(fused, expected[:, None, None, None].expand_as(fused), atol=1e-6, rtol=1e-5)


def test_quality_overlay_runs_end_to_end(tiny_dataset, models, tmp_path):
    bundle_run("run", "inference", "--config_file", config_list("inference.json", "quality/multi_axis.json", "quality/tta.json"), "--input_path", str(tiny_dataset / "phantom.raw"),
               "--output_dir", str(tmp_path), "--ckpt_path", str(models["2.5d"]), "--network_def#f0", "4", "--roi_size", "[256,256]", "--slab", "16",
               "--roi", "[[0,16],[0,64],[0,64]]")
    provenance = (tmp_path / "phantom.provenance.json").read_text()
    assert (tmp_path / "phantom.seg.raw").stat().st_size == 16 * 64 * 64
    assert '"tta": true' in provenance


def test_multi_axis_is_refused_for_3d():
    with pytest.raises(ValueError, match="multi-axis fusion is for 2D"):
        ZStackInferer((16, 16, 16), axes=("z", "y"))
    with pytest.raises(ValueError, match="axes must be"):
        ZStackInferer((16, 16), axes=("w",))
