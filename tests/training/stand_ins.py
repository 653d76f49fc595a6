"""Stand-ins for the trainer-level step tests (test_train_step.py, test_distributed.py): nnU-Net's three folders,
a real nnUNetTrainerGSD object on tiny plans whose networks are two small stand-ins, and a hand-made batch."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from helpers import tiny_2d_plans
from nnunet_gsd.dual_network import DualNetwork
from nnunet_gsd.method.superpixels import encode_ids
from nnunet_gsd.training.data import TargetLayout
from nnunet_gsd.training.variants import nnUNetTrainerGSD_tiny

NAME = "Dataset000_X"
DATASET_JSON = {"channel_names": {"0": "grey"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 2,
                "file_ending": ".png"}


class StandIn(nn.Module):
    """A network as nnU-Net's under deep supervision: logits at full, 1/2 and 1/4 resolution (the lowest weighs 0);
    it records its inputs."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Conv2d(1, 4, 3, padding=1)
        self.heads = nn.ModuleList(nn.Conv2d(4, 2, 1) for _ in range(3))
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        h = torch.relu(self.body(x))
        return [head(nn.functional.avg_pool2d(h, 2 ** i) if i else h) for i, head in enumerate(self.heads)]


class TrainerWithKT(nnUNetTrainerGSD_tiny):
    gsd_use_kt = True


def nnunet_folders(root: Path, setenv: Callable[[str, str], None]) -> dict:
    """nnU-Net's three folders under ``root``, exported with ``setenv`` (e.g. ``monkeypatch.setenv``)."""
    roots = {name: root / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for name, folder in roots.items():
        (folder / NAME).mkdir(parents=True)
        setenv(name, str(folder))
    # nnU-Net's initialize() infers the dataset class from the preprocessed files' ending
    (roots["nnUNet_preprocessed"] / NAME / "x").mkdir()
    (roots["nnUNet_preprocessed"] / NAME / "x" / "case.b2nd").touch()
    return roots


def set_tau(tau: Optional[float]) -> None:
    """The preprocessed dataset.json the trainer reads its settings from: τ in its "gsd" block (None: no block)."""
    dataset_json = dict(DATASET_JSON, **({} if tau is None else {"gsd": {"tau": tau}}))
    (Path(os.environ["nnUNet_preprocessed"]) / NAME / "dataset.json").write_text(json.dumps(dataset_json))


def stepping_trainer(trainer_class=nnUNetTrainerGSD_tiny, epoch: int = 2, offsets=(), superpixels: bool = True,
                     fold: int = 0):
    """The trainer as on_train_start leaves it at ``epoch`` (of 4; the tiny budget's warm-up is 1 epoch), with two
    stand-in networks and plain SGD (lr 1, no momentum: a step moves the parameters by minus the gradient)."""
    dataset_json = json.loads((Path(os.environ["nnUNet_preprocessed"]) / NAME / "dataset.json").read_text())
    trainer = trainer_class(dict(tiny_2d_plans(NAME), continue_training=False), "2d", fold, dataset_json,
                            torch.device("cpu"))
    trainer.initialize()
    trainer.network = DualNetwork(StandIn(1), StandIn(2))
    trainer.optimizer = torch.optim.SGD(trainer.network.parameters(), lr=1.0)
    trainer.layout = TargetLayout(has_clean=True, has_superpixels=superpixels)
    trainer._offsets = list(offsets)
    trainer.current_epoch = epoch
    return trainer


def make_batch(superpixels: bool = True, seed: int = 0, label_box: int = 8) -> dict:
    """Two 16×16 samples with a centred 8×8 box of label 1, brighter: the clean label; nGT a centred box of
    ``label_box`` pixels (8: nGT = clean label); superpixels: 4×4 tiles."""
    torch.manual_seed(seed)
    clean, noisy = torch.zeros(2, 16, 16), torch.zeros(2, 16, 16)
    clean[:, 4:12, 4:12] = 1
    lo = 8 - label_box // 2
    noisy[:, lo:lo + label_box, lo:lo + label_box] = 1
    data = torch.randn(2, 1, 16, 16) * 0.1 + clean[:, None]
    channels = [noisy, clean]
    if superpixels:
        tiles = torch.arange(16).view(16, 1) // 4 * 4 + torch.arange(16).view(1, 16) // 4 + 1
        channels += list(torch.from_numpy(encode_ids(tiles.expand(2, 16, 16).numpy())).float())
    return {"data": data, "target": torch.stack(channels, 1)}


def parameters(module: nn.Module) -> list:
    return [p.detach().clone() for p in module.parameters()]
