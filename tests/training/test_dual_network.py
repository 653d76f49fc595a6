"""The saved module: fused eval forward = mean of the two networks' logits; both networks in the state dict."""
from __future__ import annotations

import torch
from torch import nn

from helpers import tiny_2d_plans
from nnunet_gsd.dual_network import DualNetwork


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(factor))

    def forward(self, x):
        return self.weight * x


def test_fused_forward_is_mean_of_logits_and_training_forward_returns_both():
    net = DualNetwork(Scale(2.0), Scale(-4.0))
    x = torch.tensor([[[1.0, 3.0]]])
    assert torch.equal(net(x), torch.tensor([[[-1.0, -3.0]]]))  # (2x + -4x) / 2
    out1, out2 = net(x, x + 1)
    assert torch.equal(out1, 2 * x) and torch.equal(out2, -4 * (x + 1))
    assert set(net.state_dict()) == {"net1.weight", "net2.weight"}


def test_build_network_architecture_gives_two_independent_networks():
    from nnunet_gsd.training.trainer import nnUNetTrainerGSD
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    plans = tiny_2d_plans()
    pm = PlansManager(plans)
    net = nnUNetTrainerGSD.build_network_architecture(pm, pm.get_configuration("2d"), 1, 2, False)
    w1 = net.net1.encoder.stages[0][0].convs[0].conv.weight
    w2 = net.net2.encoder.stages[0][0].convs[0].conv.weight
    assert w1.shape == w2.shape and not torch.equal(w1, w2)
    net.eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), 0.5 * (net.net1(x) + net.net2(x)))
    net.set_deep_supervision(True)
    assert net.net1.decoder.deep_supervision and net.net2.decoder.deep_supervision
