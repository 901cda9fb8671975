
import pytest
import torch
from conftest import CONFIGS, bundle_run

from bundle.networks import ChannelLayerNorm, ModularUNet
from bundle.variants import variant_overlays

EXPECTED_PARAMETERS = {
    "2d f0=8": (dict(f0=8), 827_763),
    "2d f0=16": (dict(), 3_302_883),
    "2d f0=32": (dict(f0=32), 13_195_203),
    "2.5d f0=16": (dict(in_channels=5), 3_304_611),
    "3d f0=16": (dict(spatial_dims=3), 9_893_187),
    "depth 2": (dict(u_depth=2), 791_907),
    "depth 4": (dict(u_depth=4), 13_338_339),
    "no residual": (dict(residual=False), 2_332_803),
    "rigid up/down": (dict(down="rigid", up="rigid"), 2_333_187),
    "separable": (dict(conv="separable"), 1_254_341),
}

ABLATIONS = {
    "default": dict(),
    "no dropout": dict(dropout=0.0),
    "no noise": dict(noise_std=0.0),
    "no residual": dict(residual=False),
    "no norm": dict(norm="none"),
    "layer norm": dict(norm="layer"),
    "separable": dict(conv="separable"),
    "rigid": dict(down="rigid", up="rigid"),
    "depth 2": dict(u_depth=2),
    "depth 4": dict(u_depth=4),
}


def trainable(net):
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", EXPECTED_PARAMETERS)
def test_parameter_counts_match_the_paper_code(name):
    kwargs, expected = EXPECTED_PARAMETERS[name]
    assert trainable(ModularUNet(**kwargs)) == expected


@pytest.mark.parametrize("variant", [dict(spatial_dims=2, in_channels=1), dict(spatial_dims=2, in_channels=5), dict(spatial_dims=3, in_channels=1)])
@pytest.mark.parametrize("ablation", ABLATIONS)
def test_forward_shape_every_variant_and_ablation(variant, ablation):
    torch.manual_seed(0)
    net = ModularUNet(f0=4, **variant, **ABLATIONS[ablation])
    spatial = (16,) * variant["spatial_dims"]
    out = net(torch.rand(2, variant["in_channels"], *spatial))
    assert out.shape == (2, 3, *spatial)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_backward_reaches_every_parameter(spatial_dims):
    torch.manual_seed(0)
    net = ModularUNet(spatial_dims=spatial_dims, f0=4)
    net(torch.rand(2, 1, *(16,) * spatial_dims)).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_noise_only_in_training_mode():
    torch.manual_seed(0)
    net = ModularUNet(f0=4, dropout=0.0, noise_std=0.5)
    x = torch.rand(1, 1, 16, 16)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    a, b = net(x), net(x)
    assert not torch.allclose(a, b)
    net_without = ModularUNet(f0=4, dropout=0.0, noise_std=0.0).train()
    net_without.load_state_dict(net.state_dict())
    assert torch.allclose(net_without(x), net_without(x))


def test_keras_defaults_batchnorm_and_init():
    net = ModularUNet(f0=4)
    bn = net.encoder[0].norm1
    assert bn.momentum == 0.5 and bn.eps == 1e-3
    assert torch.count_nonzero(net.head.bias) == 0
    limit = (6 / ((4 + 1) * 9)) ** 0.5
    assert net.encoder[0].conv1.weight.abs().max() <= limit


def test_channel_layer_norm_normalises_over_channels():
    norm = ChannelLayerNorm(6)
    y = norm(torch.randn(2, 6, 5, 5) * 3 + 1)
    assert torch.allclose(y.mean(1), torch.zeros(2, 5, 5), atol=1e-5)
    assert torch.allclose(y.var(1, unbiased=False), torch.ones(2, 5, 5), atol=1e-2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(spatial_dims=1), "spatial_dims must be 2 or 3"),
        (dict(in_channels=0), "in_channels must be a positive integer"),
        (dict(norm="group"), "norm must be one of"),
        (dict(conv="dilated"), "conv must be one of"),
        (dict(down="stride"), "down/up must be one of"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModularUNet(**kwargs)


def test_bad_inputs_raise_clear_errors():
    net = ModularUNet(f0=4, in_channels=5)
    with pytest.raises(ValueError, match="expects 5 input channel"):
        net(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.rand(1, 5, 20, 16))
    with pytest.raises(ValueError, match=r"\[B, C, Y, X\]"):
        net(torch.rand(1, 5, 16, 16, 16))


@pytest.mark.parametrize("variant", ["2d", "2.5d", "3d"])
def test_verify_net_in_out_for_each_variant(variant):
    configs, metas = [CONFIGS / "train.json"], [CONFIGS / "metadata.json"]
    for overlay in variant_overlays(variant):
        configs.append(overlay)
        metas.append(overlay.with_suffix(".metadata.json"))
    as_list = lambda files: "[" + ",".join(f"'{f}'" for f in files) + "]"  # noqa: E731
    result = bundle_run("verify_net_in_out", "network_def", "--meta_file", as_list(metas), "--config_file", as_list(configs), "--n", "2", timeout=300)
    assert "verified with no error" in result.stdout + result.stderr


@pytest.mark.parametrize("kwargs", [dict(), dict(spatial_dims=3), dict(conv="separable"), dict(down="rigid", up="rigid"), dict(norm="layer")])
def test_folded_batch_norm_and_channels_last_keep_the_outputs(kwargs):
    from bundle.networks import inference_ready

    torch.manual_seed(0)
    net = ModularUNet(f0=4, **kwargs)
    size = (16,) * net.spatial_dims
    for _ in range(3):
        net(torch.rand(4, 1, *size))
    net.eval()
    x = torch.rand(2, 1, *(s * 2 for s in size))
    with torch.inference_mode():
        expected = net(x)
        for variant in (inference_ready(net), inference_ready(net, channels_last=True)):
            torch.testing.assert_close(variant(x), expected, atol=1e-5, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d) for m in inference_ready(net).modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d) for m in net.modules()) == (kwargs.get("norm", "batch") == "batch")
