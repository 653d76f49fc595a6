"""One module holding GSD-Net's two networks (docs/method.md §7).

Saving both networks in one module keeps the checkpoint a normal nnU-Net checkpoint
(``network_weights`` = ``{"net1.*", "net2.*"}``) and lets stock ``nnUNetv2_predict`` use it: its
plain forward returns the mean of the two networks' logits, which has the same argmax as the paper's
p = f1(x) + f2(x) and keeps logits on the scale nnU-Net's probability export expects.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn


class DualNetwork(nn.Module):
    """f1 and f2 with independent parameters.

    ``forward(x)`` → fused logits (inference, validation); ``forward(x, x_view)`` → ``(f1(x), f2(x_view))``
    (training; each a list, full resolution first, under deep supervision). Both go through ``forward`` so
    that DDP's wrapper sees every pass.
    """

    def __init__(self, net1: nn.Module, net2: nn.Module):
        super().__init__()
        self.net1 = net1
        self.net2 = net2

    def forward(self, x: torch.Tensor, x_view: Optional[torch.Tensor] = None
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        if x_view is not None:
            return self.net1(x), self.net2(x_view)
        out1, out2 = self.net1(x), self.net2(x)
        if isinstance(out1, (list, tuple)):  # deep supervision on (validation during training): full resolution
            out1, out2 = out1[0], out2[0]
        return 0.5 * (out1 + out2)

    def set_deep_supervision(self, enabled: bool) -> None:
        """nnU-Net toggles deep supervision through ``network.decoder``; we have two decoders."""
        self.net1.decoder.deep_supervision = enabled
        self.net2.decoder.deep_supervision = enabled
