"""The saved module: fused eval forward = mean of the two networks' logits; both networks in the state dict."""
from __future__ import annotations

import torch
from torch import nn

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
    plans = {
        "dataset_name": "Dataset000_X", "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [1, 1],
        "original_median_shape_after_transp": [32, 32], "image_reader_writer": "NaturalImage2DIO",
        "transpose_forward": [0, 1], "transpose_backward": [0, 1], "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {},
        "configurations": {"2d": {
            "data_identifier": "x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
            "patch_size": [32, 32], "median_image_size_in_voxels": [32, 32], "spacing": [1, 1],
            "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {}, "resampling_fn_seg_kwargs": {},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape", "resampling_fn_probabilities_kwargs": {},
            "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                             "arch_kwargs": {"n_stages": 2, "features_per_stage": [4, 8],
                                             "conv_op": "torch.nn.modules.conv.Conv2d",
                                             "kernel_sizes": [[3, 3], [3, 3]],
                                             "strides": [[1, 1], [2, 2]], "n_conv_per_stage": [1, 1],
                                             "n_conv_per_stage_decoder": [1], "conv_bias": True,
                                             "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                                             "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                                             "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                                             "nonlin_kwargs": {"inplace": True}},
                             "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": True}},
    }
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
