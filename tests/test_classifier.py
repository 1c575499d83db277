"""The CIFAR-10 classifiers of notebook 03."""
import pytest
import torch
from torch import nn

from coursekit.models.classifier import BetterNet, Net


def test_net_is_the_handouts_network():
    net = Net()
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in net.parameters()) == 62006
    assert [tuple(p.shape) for p in net.fc1.parameters()] == [(120, 400), (120,)]
    assert Net(num_classes=3)(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_better_net_shapes_batch_norm_and_dropout():
    net = BetterNet(num_classes=4, width=8, dropout=0.5)
    assert net(torch.randn(3, 3, 32, 32)).shape == (3, 4)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 6
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.5]
    assert net.classifier[-1].in_features == 32
    with pytest.raises(ValueError, match="width"):
        BetterNet(width=0)
    with pytest.raises(ValueError, match="dropout"):
        BetterNet(dropout=1.0)


def test_better_net_fits_a_small_batch():
    torch.manual_seed(0)
    net = BetterNet(num_classes=10, width=8, dropout=0.0)
    images, labels = torch.randn(20, 3, 32, 32), torch.arange(20) % 10
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(images), labels)
        loss.backward()
        optimizer.step()
    net.train()  # batch statistics, as during fitting
    assert (net(images).argmax(dim=1) == labels).float().mean() == 1.0
