"""Which refinement rule would do no harm? Audit candidate rules on a trained GSD checkpoint (not a test).

    .venv/bin/python bench/refinement_audit.py \\
        --dataset bench/work/quality-64/nnUNet_preprocessed/Dataset612_KvasirSEG \\
        --checkpoint …/nnUNetTrainerGSD__nnUNetPlans_b8__2d/fold_all/checkpoint_final.pth --plans nnUNetPlans_b8

Runs both networks of the checkpoint on the preprocessed training images (whole images, no augmentation),
selects D_clean as the trainer would (per-class or pooled small-loss with keep = 1 − τ), and for every
candidate rule (superpixel or per-pixel vote; confidence threshold κ; the majority gate) counts the labels
it would change and how many of those changes are right against the clean labels (the dataset must have
``labelsTr_clean``; the trainer's cache of them is read). The figure that matters is the net effect,
(right − wrong) / pixels: a rule does no harm only if it is ≥ 0.
Prints a table and writes it to ``--out`` (markdown).
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from nnunet_gsd.method.selection import class_balanced_small_loss_mask, pick_loss, small_loss_mask
from nnunet_gsd.method.refinement import (confident_refinement, fuse_probabilities, pixel_argmax,  # noqa: E402
                                          superpixel_majority, superpixel_vote)
from nnunet_gsd.method.superpixels import decode_ids


def load(args):
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunet_gsd.training.trainer import nnUNetTrainerGSD

    plans = json.loads((args.dataset / f"{args.plans}.json").read_text())
    dataset_json = json.loads((args.dataset / "dataset.json").read_text())
    pm = PlansManager(plans)
    cm = pm.get_configuration("2d")
    lm = pm.get_label_manager(dataset_json)
    folder = args.dataset / cm.data_identifier
    ds = infer_dataset_class(str(folder))(str(folder))
    ids = sorted(ds.identifiers)[: args.cases]
    net = nnUNetTrainerGSD.build_network_architecture(pm, cm, len(dataset_json["channel_names"]),
                                                      lm.num_segmentation_heads, False)
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    net.load_state_dict(ckpt["network_weights"])
    net.eval()
    xs, noisy, clean, sp = [], [], [], []
    for cid in ids:
        data, seg, _, _ = ds.load_case(cid)
        xs.append(np.asarray(data)[:, 0])
        noisy.append(np.asarray(seg)[0, 0].clip(0))  # -1 (outside the cropped region) is background in training
        clean.append(np.load(args.dataset / f"gsd_clean_labels_{cm.data_identifier}" / f"{cid}.npy")[0, 0].clip(0))
        sp.append(np.load(args.dataset / f"gsd_superpixels_{cm.data_identifier}" / f"{cid}.npy")[:, 0])
    shape = {a.shape for a in xs}
    if len(shape) != 1:
        raise SystemExit(f"training images differ in size ({shape}); this audit needs one size (e.g. --size 64)")
    x = torch.from_numpy(np.stack(xs)).float()
    return (net, x, torch.from_numpy(np.stack(noisy)).long(), torch.from_numpy(np.stack(clean)).long(),
            decode_ids(torch.from_numpy(np.stack(sp))), lm.num_segmentation_heads)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True, help="the preprocessed dataset folder")
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--plans", default="nnUNetPlans")
    ap.add_argument("--cases", type=int, default=256, help="training cases to audit (default 256)")
    ap.add_argument("--tau", type=float, default=0.06, help="forget rate of the selection (default 0.06)")
    ap.add_argument("--batch", type=int, default=16, help="cases per selection batch, as in training (default 16)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    net, x, noisy, clean, ids, c = load(args)
    rows = []
    with torch.no_grad():
        l1 = torch.cat([net.net1(x[i:i + 64]) for i in range(0, len(x), 64)])
        l2 = torch.cat([net.net2(x[i:i + 64]) for i in range(0, len(x), 64)])
    fused = fuse_probabilities(l1, l2, 0.5)
    vote, conf = superpixel_vote(fused, ids)
    pix = pixel_argmax(fused)
    pix_conf = fused.gather(1, pix[:, None])[:, 0]
    major = superpixel_majority(noisy, ids, c)
    n = noisy.numel()
    noisy_acc = (noisy == clean).float().mean().item()
    for selection in ("pooled", "per_class"):
        masks = []
        for i in range(0, len(x), args.batch):
            pick = pick_loss(l1[i:i + args.batch], l2[i:i + args.batch], noisy[i:i + args.batch])
            masks.append(small_loss_mask(pick, 1 - args.tau) if selection == "pooled" else
                         class_balanced_small_loss_mask(pick, noisy[i:i + args.batch], 1 - args.tau, c))
        sel = torch.cat(masks)
        precision = (noisy == clean)[sel].float().mean().item()
        rejected_noise = (noisy != clean)[~sel].float().mean().item()
        candidates = {"superpixel": (vote, conf), "pixel": (pix, pix_conf)}
        for (kind, (prop, cf)), kappa, majority in itertools.product(candidates.items(), (0.0, 0.8, 0.95),
                                                                     (False, True)):
            refined = confident_refinement(noisy, sel, prop, cf, kappa, (prop == major) if majority else None)
            changed = refined != noisy
            right = (changed & (refined == clean)).sum().item()
            wrong = (changed & (refined != clean)).sum().item()
            rows.append([selection, kind, kappa, majority, 100 * changed.float().mean().item(),
                         100 * right / n, 100 * wrong / n, 100 * (right - wrong) / n, 100 * precision,
                         100 * rejected_noise])
    head = ["selection", "vote", "κ", "gate ŷ = superpixel's nGT majority", "changed %", "right %", "wrong %", "net %",
            "sel. precision %", "rejected noise %"]
    lines = [f"Refinement audit: {args.checkpoint} on {len(x)} training cases of {args.dataset.name}; τ {args.tau}; "
             f"noisy accuracy {100 * noisy_acc:.2f} %", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
