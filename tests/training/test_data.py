"""The superpixel channels survive nnU-Net's real spatial augmentation pixel-aligned with the image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_gsd.method.superpixels import decode_ids, encode_ids
from nnunet_gsd.training.data import AuxAwareSpatialTransform, TargetLayout, with_aux_spatial_transform

TILE, TILES = 8, 8  # 64 × 64 image of 8 × 8 flat tiles


def tiled_case():
    """Image of flat tiles (tile k has intensity 10·(k+1)), label = tile parity, superpixel id = k + 1."""
    index = np.arange(TILES * TILES).reshape(TILES, TILES).repeat(TILE, 0).repeat(TILE, 1)
    image = torch.from_numpy(10.0 * (index + 1)).float()[None]
    label = torch.from_numpy(index % 2).short()[None]
    ids = torch.from_numpy(encode_ids(index + 1)).short()
    return image, torch.cat((label, ids)), index


def training_pipeline(layout: TargetLayout):
    """nnU-Net's own training pipeline, reduced to its spatial parts, with rotation and scaling forced on."""
    full = nnUNetTrainer.get_training_transforms(
        patch_size=(48, 48), rotation_for_DA=(-np.pi, np.pi), deep_supervision_scales=None, mirror_axes=(0, 1),
        do_dummy_2d_data_aug=False)
    full.transforms = [t for t in full.transforms
                       if isinstance(t, (SpatialTransform, MirrorTransform, RemoveLabelTansform))]
    spatial = next(t for t in full.transforms if isinstance(t, SpatialTransform))
    spatial.p_rotation = spatial.p_scaling = 1.0
    return with_aux_spatial_transform(full, layout)


def test_superpixel_ids_stay_aligned_with_the_image_under_rotation_scaling_mirroring():
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - batchgeneratorsv2 transforms draw from numpy's global RNG
    layout = TargetLayout(has_clean=False, has_superpixels=True)
    pipeline = training_pipeline(layout)
    assert any(isinstance(t, AuxAwareSpatialTransform) for t in pipeline.transforms)
    image, seg, index = tiled_case()
    checked = 0
    for _ in range(20):
        out = pipeline(image=image.clone(), segmentation=seg.clone())
        img, label = out["image"][0], out["segmentation"][0]
        ids = decode_ids(out["segmentation"][None, 1:3])[0]
        assert set(ids.unique().tolist()) <= set(range(0, TILES * TILES + 1)), "an id was invented"
        # interior pixels (same id in the whole 3×3 neighbourhood, patch border excluded): the image there is
        # the tile's flat colour, since bilinear interpolation of a flat region is exact
        padded = torch.nn.functional.pad(ids[None, None].float(), (1, 1, 1, 1), value=-1.0)
        pool = torch.nn.functional.max_pool2d
        same = (pool(padded, 3, 1) == pool(-padded, 3, 1).neg())[0, 0]
        interior = same & (ids > 0)
        expected = 10.0 * ids[interior].float()
        assert torch.allclose(img[interior], expected, atol=1e-3)
        assert torch.equal(label[interior].long(), (ids[interior] - 1) % 2)
        checked += int(interior.sum())
    assert checked > 20 * 48 * 48 // 4  # most of each patch is tile interior, so the check has teeth


def test_label_channels_keep_nnunet_resampling_and_ids_use_nearest():
    layout = TargetLayout(has_clean=True, has_superpixels=True)
    spatial = SpatialTransform((16, 16), 0, False, p_rotation=1, rotation=(0.3, 0.3), p_scaling=0)
    wrapped = AuxAwareSpatialTransform(spatial, layout)
    assert wrapped.spatial is spatial and wrapped.spatial.mode_seg == "bilinear"
    assert wrapped.nearest.mode_seg == "nearest" and wrapped.nearest.patch_size == spatial.patch_size
    assert (wrapped.num_label_channels, wrapped.num_channels) == (2, 4)


@pytest.mark.parametrize("has_clean, has_sp, channels", [(False, False, 1), (True, False, 2), (False, True, 3),
                                                          (True, True, 4)])
def test_target_layout(has_clean, has_sp, channels):
    layout = TargetLayout(has_clean, has_sp)
    assert layout.num_channels == channels
    if has_sp:
        assert layout.superpixel_channels == slice(1 + has_clean, 3 + has_clean)


def test_only_rgb_photographs_get_lab_slic():
    from nnunet_gsd.utils import is_rgb  # the one rule (the trainer passes it to SLIC's convert2lab)
    assert is_rgb({"0": "R", "1": "G", "2": "B"}) and is_rgb({"2": "blue", "0": "red", "1": "green"})
    assert not is_rgb({"0": "T1", "1": "T1c", "2": "T2"}) and not is_rgb({"0": "grey"})
