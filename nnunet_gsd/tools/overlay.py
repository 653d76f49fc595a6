"""``nnunet_gsd overlay PRED_DIR RAW_DATASET_DIR``: PNG overlays of image, ground truth and prediction.

The paper's Fig. 6 style: the image with the ground-truth contour in green and the prediction's
contour in red (yellow where they coincide). One PNG per case, ``OUT/CASE.png``, holding exactly the
image's pixels enlarged by an integer ``--scale`` (no axes, no margins: the PNG is H·scale × W·scale);
contours are the one-pixel inner boundaries of the enlarged label maps (every class boundary of
multi-class maps). Image: RGB PNG datasets in colour, otherwise the first channel in grey,
contrast-stretched to its 0.5–99.5 percentiles.

3D cases: one slice along the first spatial axis (nnU-Net's slowest axis, axial for typical
NIfTI): the middle slice of the extent that holds foreground in the ground truth or the prediction,
or the volume's middle slice when both are empty. Its file is ``OUT/CASE_z<index>.png``.

Cases: ``--cases A B …``, or the ``--worst K`` cases by foreground Dice (nnU-Net's metric code;
a case empty in both counts as Dice 1), or by default every predicted case.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from nnunet_gsd.errors import UserError
from nnunet_gsd.tools.common import (case_ids, foreground_dice, foreground_labels, load_dataset_json, reader_writer,
                                     require_folder)

GT_COLOUR = np.array([0.0, 1.0, 0.0])
PRED_COLOUR = np.array([1.0, 0.0, 0.0])
BOTH_COLOUR = np.array([1.0, 1.0, 0.0])


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "overlay", help="PNG overlays of image, ground-truth and prediction contours",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pred_dir", type=Path, help="folder of predictions (e.g. from nnUNetv2_predict)")
    p.add_argument("raw_dir", type=Path, help="nnU-Net raw dataset folder (dataset.json, imagesTs/, labelsTs/)")
    p.add_argument("-o", "--output", type=Path, help="output folder (default: PRED_DIR/overlays)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--cases", nargs="+", metavar="CASE", help="these case ids")
    which.add_argument("--worst", type=int, metavar="K", help="the K cases with the lowest Dice")
    p.add_argument("--images", default="imagesTs", help="images sub-folder of RAW_DATASET_DIR (default: %(default)s)")
    p.add_argument("--labels", default="labelsTs",
                   help="ground-truth sub-folder of RAW_DATASET_DIR, e.g. labelsTs_A1 (default: %(default)s)")
    p.add_argument("--scale", type=int,
                   help="integer enlargement (default: the smallest making the shorter edge >= 256 px)")
    p.set_defaults(func=main)


# ---------------------------------------------------------------- pure parts
def choose_slice(reference: np.ndarray, prediction: np.ndarray) -> int:
    """Index along the first axis of a (Z, H, W) pair: middle of the foreground extent, else the middle."""
    present = np.flatnonzero(np.any((reference > 0) | (prediction > 0), axis=(1, 2)))
    if present.size == 0:
        return reference.shape[0] // 2
    return int((present[0] + present[-1]) // 2)


def to_rgb(image: np.ndarray, rgb: bool) -> np.ndarray:
    """(C, H, W) image -> (H, W, 3) floats in [0, 1]; RGB datasets in colour, else channel 0 in grey."""
    chans = image[:3] if rgb and image.shape[0] >= 3 else image[:1]
    lo, hi = np.percentile(chans, [0.5, 99.5])
    scaled = np.clip((chans.astype(np.float64) - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return np.repeat(scaled, 3, axis=0).transpose(1, 2, 0) if scaled.shape[0] == 1 else scaled.transpose(1, 2, 0)


def render(image: np.ndarray, reference: np.ndarray, prediction: np.ndarray, scale: int, rgb: bool) -> np.ndarray:
    """Overlay of one 2D slice: (H·scale, W·scale, 3) uint8 with GT (green) and prediction (red) contours."""
    from skimage.segmentation import find_boundaries

    def enlarge(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(a, scale, axis=-2), scale, axis=-1)

    canvas = to_rgb(enlarge(image), rgb)
    gt = find_boundaries(enlarge(reference), mode="inner")
    pred = find_boundaries(enlarge(prediction), mode="inner")
    canvas[gt] = GT_COLOUR
    canvas[pred] = PRED_COLOUR
    canvas[gt & pred] = BOTH_COLOUR
    return np.rint(canvas * 255).astype(np.uint8)


def default_scale(shape: Tuple[int, int]) -> int:
    return max(1, -(-256 // min(shape)))


def worst_cases(dice: Dict[str, float], k: int) -> List[str]:
    """The k case ids of lowest Dice (NaN = empty in both = perfect)."""
    return sorted(dice, key=lambda c: (1.0 if np.isnan(dice[c]) else dice[c], c))[:k]


# ---------------------------------------------------------------- files
def image_files(images_dir: Path, case: str, ending: str) -> List[Path]:
    files = sorted(Path(images_dir).glob(f"{case}_[0-9][0-9][0-9][0-9]{ending}"))
    if not files:
        raise UserError(f"no image {images_dir}/{case}_0000{ending}: pass the images folder with --images")
    return files


def main(args: argparse.Namespace) -> int:
    from PIL import Image
    require_folder(args.pred_dir, "prediction folder", "pass the -o folder of nnUNetv2_predict")
    dataset_json = load_dataset_json(args.raw_dir)
    ending = dataset_json["file_ending"]
    images_dir = require_folder(args.raw_dir / args.images, "images folder", "pass --images (e.g. imagesTs)")
    labels_dir = require_folder(args.raw_dir / args.labels, "ground-truth folder", "pass --labels (e.g. labelsTs)")
    predicted = case_ids(args.pred_dir, ending)
    if not predicted:
        raise UserError(f"no {ending} predictions in {args.pred_dir}")
    if args.cases:
        unknown = [c for c in args.cases if c not in predicted]
        if unknown:
            raise UserError(f"--cases {' '.join(unknown)}: no such prediction in {args.pred_dir} "
                            f"(available: {', '.join(predicted[:5])}{' …' if len(predicted) > 5 else ''})")
    if args.worst is not None and args.worst < 1:
        raise UserError(f"--worst {args.worst}: must be >= 1")
    if args.scale is not None and args.scale < 1:
        raise UserError(f"--scale {args.scale}: must be >= 1")
    rw = reader_writer(dataset_json, args.pred_dir / f"{predicted[0]}{ending}")
    labels = foreground_labels(dataset_json)
    rgb = ending == ".png" and len(dataset_json.get("channel_names", {})) == 3

    def load(case: str) -> Tuple[np.ndarray, np.ndarray]:
        ref_file = labels_dir / f"{case}{ending}"
        if not ref_file.is_file():
            raise UserError(f"no ground truth {ref_file} for the prediction {case}{ending}")
        return rw.read_seg(str(ref_file))[0][0], rw.read_seg(str(args.pred_dir / f"{case}{ending}"))[0][0]

    selected = args.cases or predicted
    dice: Dict[str, float] = {}
    if args.worst is not None:
        for case in predicted:
            reference, prediction = load(case)
            dice[case] = foreground_dice(reference, prediction, labels)
        selected = worst_cases(dice, args.worst)
    out = args.output or args.pred_dir / "overlays"
    out.mkdir(parents=True, exist_ok=True)
    for case in selected:
        reference, prediction = load(case)
        if reference.shape != prediction.shape:
            raise UserError(f"{case}: prediction shape {prediction.shape} differs from the ground truth's "
                            f"{reference.shape}")
        if case not in dice:
            dice[case] = foreground_dice(reference, prediction, labels)
        image = rw.read_images([str(f) for f in image_files(images_dir, case, ending)])[0]
        z = choose_slice(reference, prediction)
        scale = args.scale or default_scale(reference.shape[1:])
        picture = render(image[:, z], reference[z], prediction[z], scale, rgb)
        name = f"{case}.png" if reference.shape[0] == 1 else f"{case}_z{z:03d}.png"
        Image.fromarray(picture).save(out / name)
        print(f"{out / name}: Dice {dice[case]:.4f}")
    return 0
