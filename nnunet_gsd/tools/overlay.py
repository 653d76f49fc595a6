"""``nnunet_gsd overlay GT_FOLDER PRED_FOLDER``: PNG overlays of image, reference and prediction contours.

Arguments in the order of ``nnUNetv2_evaluate_folder``: the reference labels (e.g.
``$nnUNet_raw/DatasetX/labelsTs`` or a rater's ``labelsTs_A1``), then the predictions.

The paper's Fig. 6 style, in this package's one colour convention (every picture it draws): the
reference contour in green, the prediction's in magenta, yellow where they coincide, with a legend strip
below the picture. One PNG per case, ``OUT/CASE.png``: the image's pixels enlarged by an integer
``--scale`` (no resampling), the one-pixel inner boundaries of the enlarged label maps (every class
boundary of multi-class maps), then the legend. Image: RGB datasets (channels R, G, B) in colour,
otherwise the first channel in grey, contrast-stretched to its 0.5–99.5 percentiles.

3D cases: one slice along the first spatial axis (nnU-Net's slowest axis, axial for typical NIfTI):
the middle slice of the extent that holds foreground in the reference or the prediction, or the
volume's middle slice when both are empty. Its file is ``OUT/CASE_z<index>.png``.

Cases: ``--cases A B …``, or the ``--worst K`` cases by foreground Dice (nnU-Net's metric code;
a case empty in both counts as Dice 1), or by default every predicted case.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from nnunet_gsd.errors import UserError
from nnunet_gsd.tools.common import (case_ids, foreground_dice, foreground_labels, load_dataset_json, reader_writer,
                                     require_folder)
from nnunet_gsd.utils import is_rgb

#: The one colour convention of every picture this package draws (RGB in [0, 1]): the reference (ground
#: truth, clean label) green, the other map (prediction, noisy label) magenta, both yellow.
REFERENCE_COLOUR = np.array([0.0, 1.0, 0.0])
PREDICTION_COLOUR = np.array([1.0, 0.0, 1.0])
BOTH_COLOUR = np.array([1.0, 1.0, 0.0])
LEGEND = (("reference", REFERENCE_COLOUR), ("prediction", PREDICTION_COLOUR), ("both", BOTH_COLOUR))
LEGEND_HEIGHT = 16


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "overlay", help="PNG overlays of image, reference and prediction contours",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("gt_folder", type=Path, help="reference labels, e.g. $nnUNet_raw/DatasetX/labelsTs")
    p.add_argument("pred_folder", type=Path, help="predictions (the -o folder of nnUNetv2_predict)")
    p.add_argument("-i", dest="images", type=Path,
                   help="images folder (default: imagesTs beside GT_FOLDER)")
    p.add_argument("-djfile", type=Path,
                   help="dataset.json (default: PRED_FOLDER/dataset.json, else the one beside GT_FOLDER)")
    p.add_argument("-o", dest="output", type=Path, help="output folder (default: PRED_FOLDER/overlays)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--cases", nargs="+", metavar="CASE", help="these case ids")
    which.add_argument("--worst", type=int, metavar="K", help="the K cases with the lowest Dice")
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
    """Overlay of one 2D slice: (H·scale, W·scale, 3) uint8 with reference and prediction contours."""
    from skimage.segmentation import find_boundaries

    def enlarge(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(a, scale, axis=-2), scale, axis=-1)

    canvas = to_rgb(enlarge(image), rgb)
    ref = find_boundaries(enlarge(reference), mode="inner")
    pred = find_boundaries(enlarge(prediction), mode="inner")
    canvas[ref] = REFERENCE_COLOUR
    canvas[pred] = PREDICTION_COLOUR
    canvas[ref & pred] = BOTH_COLOUR
    return np.rint(canvas * 255).astype(np.uint8)


def with_legend(picture: np.ndarray) -> np.ndarray:
    """``picture`` above a black strip naming the three contour colours (widened if the legend needs it)."""
    from PIL import Image, ImageDraw
    entries = [(name, tuple(int(255 * c) for c in colour)) for name, colour in LEGEND]
    width = sum(14 + 6 * len(name) + 10 for name, _ in entries)  # PIL's default font: ~6 px per character
    h, w = picture.shape[:2]
    strip = Image.new("RGB", (max(w, width), h + LEGEND_HEIGHT))
    strip.paste(Image.fromarray(picture), (0, 0))
    draw = ImageDraw.Draw(strip)
    x = 2
    for name, colour in entries:
        draw.rectangle([x, h + 4, x + 9, h + 12], fill=colour)
        draw.text((x + 13, h + 2), name, fill=(255, 255, 255))
        x += 14 + 6 * len(name) + 10
    return np.asarray(strip)


def default_scale(shape: Tuple[int, int]) -> int:
    return max(1, -(-256 // min(shape)))


def worst_cases(dice: Dict[str, float], k: int) -> List[str]:
    """The k case ids of lowest Dice (NaN = empty in both = perfect)."""
    return sorted(dice, key=lambda c: (1.0 if np.isnan(dice[c]) else dice[c], c))[:k]


def comparison_figure(path: Path, images: Sequence[np.ndarray], references: Sequence[np.ndarray],
                      predictions: Mapping[str, Sequence[np.ndarray]], dice: Mapping[str, Sequence[float]],
                      case_names: Sequence[str], rgb: bool, title: str = "") -> None:
    """One PNG comparing several models: a row per case, a column per model, Dice in each panel's title.

    ``images[i]`` is (C, H, W); ``references[i]`` and ``predictions[model][i]`` are (H, W) label maps.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    models = list(predictions)
    scale = default_scale(references[0].shape)
    fig, axes = plt.subplots(len(case_names), len(models), squeeze=False,
                             figsize=(2.6 * len(models), 2.6 * len(case_names) + 0.8))
    for row, case in enumerate(case_names):
        for col, model in enumerate(models):
            ax = axes[row, col]
            ax.imshow(render(images[row], references[row], predictions[model][row], scale, rgb))
            ax.set_title(f"{model}\n{case}: Dice {dice[model][row]:.3f}", fontsize=8)
            ax.axis("off")
    fig.legend(handles=[Patch(color=colour, label=name) for name, colour in LEGEND], loc="lower center",
               ncol=len(LEGEND), frameon=False, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- files
def image_files(images_dir: Path, case: str, ending: str) -> List[Path]:
    files = sorted(Path(images_dir).glob(f"{case}_[0-9][0-9][0-9][0-9]{ending}"))
    if not files:
        raise UserError(f"no image {images_dir}/{case}_0000{ending}: pass the images folder with -i")
    return files


def find_dataset_json(pred_folder: Path, gt_folder: Path, djfile: Path | None) -> dict:
    """``-djfile``, else the copy nnUNetv2_predict leaves in the prediction folder, else the raw dataset's."""
    if djfile is not None:
        return load_dataset_json(djfile)
    for folder in (pred_folder, gt_folder.parent):
        if (folder / "dataset.json").is_file():
            return load_dataset_json(folder)
    raise UserError(f"no dataset.json in {pred_folder} or {gt_folder.parent}: pass -djfile")


def main(args: argparse.Namespace) -> int:
    from PIL import Image
    pred_dir = require_folder(args.pred_folder, "prediction folder", "pass the -o folder of nnUNetv2_predict")
    labels_dir = require_folder(args.gt_folder, "reference folder",
                                "pass the labels, e.g. $nnUNet_raw/DatasetX/labelsTs")
    dataset_json = find_dataset_json(pred_dir, labels_dir, args.djfile)
    ending = dataset_json["file_ending"]
    images_dir = require_folder(args.images or labels_dir.parent / "imagesTs", "images folder",
                                "pass -i (e.g. $nnUNet_raw/DatasetX/imagesTs)")
    predicted = case_ids(pred_dir, ending)
    if not predicted:
        raise UserError(f"no {ending} predictions in {pred_dir}")
    if args.cases:
        unknown = [c for c in args.cases if c not in predicted]
        if unknown:
            raise UserError(f"--cases {' '.join(unknown)}: no such prediction in {pred_dir} "
                            f"(available: {', '.join(predicted[:5])}{' …' if len(predicted) > 5 else ''})")
    if args.worst is not None and args.worst < 1:
        raise UserError(f"--worst {args.worst}: must be >= 1")
    if args.scale is not None and args.scale < 1:
        raise UserError(f"--scale {args.scale}: must be >= 1")
    rw = reader_writer(dataset_json, pred_dir / f"{predicted[0]}{ending}")
    labels = foreground_labels(dataset_json)
    rgb = is_rgb(dataset_json.get("channel_names", {}))

    def load(case: str) -> Tuple[np.ndarray, np.ndarray]:
        ref_file = labels_dir / f"{case}{ending}"
        if not ref_file.is_file():
            raise UserError(f"no reference {ref_file} for the prediction {case}{ending}")
        return rw.read_seg(str(ref_file))[0][0], rw.read_seg(str(pred_dir / f"{case}{ending}"))[0][0]

    selected = args.cases or predicted
    dice: Dict[str, float] = {}
    if args.worst is not None:
        for case in predicted:
            reference, prediction = load(case)
            dice[case] = foreground_dice(reference, prediction, labels)
        selected = worst_cases(dice, args.worst)
    out = args.output or pred_dir / "overlays"
    out.mkdir(parents=True, exist_ok=True)
    for case in selected:
        reference, prediction = load(case)
        if reference.shape != prediction.shape:
            raise UserError(f"{case}: prediction shape {prediction.shape} differs from the reference's "
                            f"{reference.shape}")
        if case not in dice:
            dice[case] = foreground_dice(reference, prediction, labels)
        image = rw.read_images([str(f) for f in image_files(images_dir, case, ending)])[0]
        z = choose_slice(reference, prediction)
        scale = args.scale or default_scale(reference.shape[1:])
        picture = with_legend(render(image[:, z], reference[z], prediction[z], scale, rgb))
        name = f"{case}.png" if reference.shape[0] == 1 else f"{case}_z{z:03d}.png"
        Image.fromarray(picture).save(out / name)
        print(f"{out / name}: Dice {dice[case]:.4f}")
    return 0
