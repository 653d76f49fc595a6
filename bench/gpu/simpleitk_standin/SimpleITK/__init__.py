"""A stand-in for SimpleITK on the offline GPU machine of ``bench/gpu_quality.sh`` (not part of the package).

nnU-Net imports SimpleITK at start-up, but the GPU benchmark's data are PNG images (nnU-Net's natural-image
reader) and never reach it; its wheel (53 MB) does not fit beside the other wheels and Kvasir-SEG in what such
a machine can be sent (64 MiB). The script puts this module on the path only where SimpleITK is missing and
the packed folder holds no SimpleITK wheel. Any use of it fails at once, naming the fix.
"""


def __getattr__(name: str):
    if name.startswith("__"):     # hasattr() and the import machinery probe these; they must see a plain module
        raise AttributeError(name)
    raise ImportError(f"SimpleITK.{name}: this is bench/gpu_quality.sh's stand-in, not SimpleITK; the step that "
                      f"needs it reads or writes medical image formats: pack with --with-simpleitk "
                      f"(bench/gpu_quality.sh pack) or install SimpleITK")
