"""nnunet_gsd: GSD-Net (noisy-label segmentation) as an nnU-Net v2 trainer plugin.

Importing this package must stay cheap (no torch): the ``.pth`` start-up hook imports it in every
Python process to register :data:`TRAINER_DIR` with nnU-Net.
"""
import os
import sys

__version__ = "0.1.0"

#: The directory nnU-Net searches for our trainers (``nnUNet_extTrainer``). It holds only thin
#: re-export modules, because nnU-Net imports every module it finds there.
TRAINER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nnunet_trainers")


def _map_converters() -> None:
    """Make ``nnunet_gsd.dataset_conversion`` importable from a source checkout (and editable install).

    The converters live in the repository's top-level ``dataset_conversion/`` (the project's layout);
    the wheel installs that folder as ``nnunet_gsd/dataset_conversion`` (pyproject's ``sources``), so
    no generic top-level ``dataset_conversion`` package lands in site-packages. In a checkout the
    folder is this package's sibling; registering it under the same name keeps one import path.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    tree = os.path.join(os.path.dirname(here), "dataset_conversion")
    name = f"{__name__}.dataset_conversion"
    if name in sys.modules or os.path.isdir(os.path.join(here, "dataset_conversion")) \
            or not os.path.isfile(os.path.join(tree, "__init__.py")):
        return
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(tree, "__init__.py"),
                                                  submodule_search_locations=[tree])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_map_converters()
