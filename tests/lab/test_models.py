"""The networks: the tutorial CNN exactly as published, and the fast preset's shape and width knob."""

from __future__ import annotations

import pytest
import torch
from cifarlab.models import FastNet, TutorialNet, build_model, count_parameters, max_pool_2x2
from torch import nn


def test_tutorial_net_has_the_published_shape_and_parameter_count() -> None:
    net = TutorialNet()
    assert count_parameters(net) == 62006
    assert [tuple(m.weight.shape) for m in (net.conv1, net.conv2)] == [(6, 3, 5, 5), (16, 6, 5, 5)]
    assert [(m.in_features, m.out_features) for m in (net.fc1, net.fc2, net.fc3)] == [(400, 120), (120, 84), (84, 10)]
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert net(x).shape == (4, 10)


def test_uint8_and_unit_float_inputs_give_the_same_logits() -> None:
    net = TutorialNet().eval()
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(net(x), net(x.float() / 255))


def test_fast_net_width_scales_its_size() -> None:
    small, big = FastNet(width=0.25), FastNet(width=0.5)
    assert count_parameters(small) < count_parameters(big) / 2
    assert small(torch.zeros(3, 3, 32, 32, dtype=torch.uint8)).shape == (3, 10)


def test_unknown_model_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build_model("vgg")


def test_tutorial_network_keeps_its_layers_and_state_dict() -> None:
    net = build_model("tutorial")
    assert type(net.pool) is nn.MaxPool2d and net.pool.kernel_size == 2 and net.pool.stride == 2
    layers = [f"{layer}.{p}" for layer in ("conv1", "conv2", "fc1", "fc2", "fc3") for p in ("weight", "bias")]
    assert sorted(net.state_dict()) == sorted([*layers, "norm.mean", "norm.std"])
    assert count_parameters(net) == 62_006


def test_the_tutorial_nets_pooling_without_gradients_equals_max_pool() -> None:
    x = torch.randn(3, 6, 29, 28)  # an odd side drops its last row, as nn.MaxPool2d's does
    assert torch.equal(max_pool_2x2(x), nn.MaxPool2d(2, 2)(x))
    net = TutorialNet()
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        fast = net(images)
    torch.set_grad_enabled(True)
    assert torch.equal(fast, net(images).detach())
