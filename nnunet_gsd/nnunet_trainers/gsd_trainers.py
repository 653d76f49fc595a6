# Re-exports only: nnU-Net imports every module of this directory while searching for a trainer
# (nnUNet_extTrainer). The classes keep their real module path for pickling and DDP spawn.
from nnunet_gsd.training.trainer import nnUNetTrainerGSD  # noqa: F401
from nnunet_gsd.training.variants import (  # noqa: F401
    nnUNetTrainerGSD_5epochs, nnUNetTrainerGSD_50epochs, nnUNetTrainerGSD_100epochs, nnUNetTrainerGSD_paper,
    nnUNetTrainerGSD_tiny, nnUNetTrainerJoCoR, nnUNetTrainerJoCoRGDA, nnUNetTrainerJoCoRGDALR,
    nnUNetTrainerJoCoRGDALRKT, nnUNetTrainerJoCoRGDASGLR, nnUNetTrainerNoDeepSupervisionBudget,
    nnUNetTrainerCELossBudget, nnUNetTrainerBudget, nnUNetTrainerBudgetCalibrated, nnUNetTrainerCalibrated,
    nnUNetTrainerGSDFaithful,
    nnUNetTrainerRaterSampling, nnUNetTrainerSoftRaters, nnUNetTrainerSoftRatersCE)
