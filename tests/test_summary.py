"""Parameter counts and the layer table."""
from __future__ import annotations

import pytest
from torch import nn

from coursekit.models.summary import count_parameters, summary


def _net():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 2))
    net[0].requires_grad_(False)
    return net


def test_count_parameters():
    net = _net()
    assert count_parameters(net) == (3 * 4 * 9 + 4) + (64 * 2 + 2)
    assert count_parameters(net, trainable_only=True) == 64 * 2 + 2


def test_summary_lists_each_layer_with_its_output_shape():
    net = _net().train()
    text = summary(net, (2, 3, 8, 8), device="cpu")
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "type", "output", "shape", "parameters"]
    assert lines[1].split() == ["0", "Conv2d", "2×4×8×8", "112"]
    assert lines[3].split() == ["2", "MaxPool2d", "2×4×4×4", "0"]
    assert lines[5].split() == ["4", "Linear", "2×2", "130"]
    assert lines[-1] == "total parameters: 242 (trainable: 130)"
    assert net.training  # mode restored
    assert not net[0]._forward_hooks  # hooks removed


def test_summary_rejects_a_shape_without_batch_dimension():
    with pytest.raises(ValueError, match="batch dimension"):
        summary(_net(), (3,))
