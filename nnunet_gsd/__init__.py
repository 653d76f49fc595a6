"""nnunet_gsd: GSD-Net (noisy-label segmentation) as an nnU-Net v2 trainer plugin.

Importing this package must stay cheap (no torch): the ``.pth`` start-up hook imports it in every
Python process to register :data:`TRAINER_DIR` with nnU-Net.
"""
import os

__version__ = "0.1.0"

#: The directory nnU-Net searches for our trainers (``nnUNet_extTrainer``). It holds only thin
#: re-export modules, because nnU-Net imports every module it finds there.
TRAINER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nnunet_trainers")
