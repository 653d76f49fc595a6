"""Start-up hook (run from ``nnunet_gsd_trainers.pth``): make nnU-Net find our trainers.

Appends :data:`nnunet_gsd.TRAINER_DIR` to ``nnUNet_extTrainer`` unless it is already listed.
Imports nothing heavy, so every Python start-up stays fast.
"""
import os

from nnunet_gsd import TRAINER_DIR


def register() -> None:
    current = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if TRAINER_DIR not in current:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join(current + [TRAINER_DIR])


register()
