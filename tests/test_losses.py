import math

import pytest
import torch
from conftest import CONFIGS
from monai.bundle import ConfigParser

from bundle.losses import Jaccard2Loss, jaccard2_loss


def one_hot(labels, classes=3):
    return torch.nn.functional.one_hot(labels, classes).movedim(-1, 1).float()


def test_perfect_prediction_gives_zero():
    labels = torch.randint(0, 3, (2, 1, 8, 8))
    assert jaccard2_loss(one_hot(labels[:, 0]), labels, smooth=0.0).item() == pytest.approx(0.0)
    assert jaccard2_loss(one_hot(labels[:, 0]), labels).item() == pytest.approx(0.0)


def test_uniform_prediction_tends_to_one_minus_one_over_c():
    labels = torch.randint(0, 3, (4, 1, 64, 64))
    uniform = torch.full((4, 3, 64, 64), 1 / 3)
    n = labels.numel()
    expected = 1 - (n / 3 + 1) / (n + 1)
    assert jaccard2_loss(uniform, labels).item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(1 - 1 / 3, abs=1e-4)


def test_hand_computed_case_sums_over_everything_at_once():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]]).T.reshape(1, 3, 2)
    y = torch.tensor([[[0, 2]]])
    intersection = 0.7 + 0.3
    union = 2 + (0.49 + 0.04 + 0.01 + 0.01 + 0.36 + 0.09) - intersection
    assert jaccard2_loss(p, y, smooth=1.0).item() == pytest.approx(1 - (intersection + 1) / (union + 1), rel=1e-6)


def test_unannotated_voxels_are_ignored():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]]).T.reshape(1, 3, 2)
    y_full = torch.tensor([[[0, 255]]])
    y_one = torch.tensor([[[0]]])
    assert jaccard2_loss(p, y_full).item() == pytest.approx(jaccard2_loss(p[..., :1], y_one).item(), rel=1e-6)


def test_loss_on_logits_has_gradients():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    labels = torch.randint(0, 3, (2, 1, 8, 8))
    Jaccard2Loss()(logits, labels).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_paper_schedule_lr_at_epoch_starts():
    """train.json's scheduler: 1e-3 for 100 epochs, then linear down to 1e-4 over 100 more, stepped per epoch."""
    parser = ConfigParser(ConfigParser.load_config_file(str(CONFIGS / "train.json")))
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    parser.update({"optimizer": optimizer, "max_epochs": 200})
    scheduler = parser.get_parsed_content("lr_scheduler")
    lrs = {}
    for epoch in range(200):
        lrs[epoch] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-3) and lrs[99] == pytest.approx(1e-3) and lrs[100] == pytest.approx(1e-3)
    assert lrs[150] == pytest.approx(1e-3 * (1 - 0.9 * 50 / 100))
    assert lrs[199] == pytest.approx(1e-3 * (1 - 0.9 * 99 / 100))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert all(lrs[e] >= lrs[e + 1] for e in range(199)) and not math.isnan(lrs[199])
