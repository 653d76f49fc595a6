"""Per-call cost of the per-step method functions (not a test).

    PYTHONPATH=. .venv/bin/python bench/method_timing.py [--device cpu|cuda] [--threads N] [--repeats R]

Batches: 2D 12×1×64×64 (2 classes), 3D 2×1×128³ (2 classes). Superpixel ids are a regular
grid with the SLIC count of docs/method.md §4 (1024 per 256²), offset by a large constant to mimic
crops of a bigger case. On a shared, busy CPU use ``--threads 1``: with 2 intra-op threads
competing for 2 loaded cores, small ops stall in OpenMP barriers (100x slower, not our code).
"""
from __future__ import annotations

import argparse
import time

import torch

from nnunet_gsd.method.calibration import shift_labels
from nnunet_gsd.method.gda import clipped_boundary_distance, default_threshold
from nnunet_gsd.method.selection import pick_loss, small_loss_mask
from nnunet_gsd.method.refinement import superpixel_argmax
from nnunet_gsd.method.transfer import derangement, mix, transfer_masks
from nnunet_gsd.method.views import weak_intensity_view


def _blob_labels(b, spatial, device, g):
    x = torch.randn(b, 1, *[s // 8 for s in spatial], generator=g)
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    x = torch.nn.functional.interpolate(x, size=spatial, mode=mode, align_corners=False)[:, 0]
    return (x > 0.5).long().to(device)


def _grid_ids(b, spatial, n_segments, device):
    nd = len(spatial)
    per_axis = max(1, round(n_segments ** (1 / nd)))
    step = [max(1, s // per_axis) for s in spatial]
    coords = torch.meshgrid(*[torch.arange(s) // st for s, st in zip(spatial, step)], indexing="ij")
    ids = torch.zeros(spatial, dtype=torch.long)
    for c in coords:
        ids = ids * (per_axis + 1) + c
    return (ids + 100_000 + 1).expand(b, *spatial).contiguous().to(device)


def _time(fn, device, repeats):
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    best = float("inf")
    # minimum over repeats: the CPU is shared, and the minimum is the least disturbed estimate
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _cases(b: int, spatial: tuple, device: torch.device, g: torch.Generator) -> list:
    """(label, zero-argument function) for every timed method function on one batch shape."""
    c = 2
    n_seg = max(1, round(1024 * torch.tensor(spatial).prod().item() / 65536))
    T = default_threshold(spatial)
    y = _blob_labels(b, spatial, device, g)
    l1 = torch.randn(b, c, *spatial, generator=g).to(device)
    l2 = torch.randn(b, c, *spatial, generator=g).to(device)
    x = torch.randn(b, 1, *spatial, generator=g).to(device)
    probs = torch.softmax(l1, 1)
    ids = _grid_ids(b, spatial, n_seg, device)
    loss = pick_loss(l1, l2, y)
    max_id = int(ids.max())
    w = torch.rand(b, *spatial, generator=g).to(device)

    def km():
        m = transfer_masks(y, c, generator=g)
        p = derangement(b, generator=g, device=device)
        return mix(x, m, p), mix(y, m, p), mix(w, m, p), mix(l1, m, p)

    return [
        ("shift_labels (grow 3 voxels)", lambda: shift_labels(y, [0, 3])),
        ("shift_labels (shrink 3 voxels)", lambda: shift_labels(y, [0, -3])),
        (f"clipped_boundary_distance (T={T:g})", lambda: clipped_boundary_distance(y, T)),
        ("pick_loss", lambda: pick_loss(l1, l2, y)),
        ("small_loss_mask (keep 0.95)", lambda: small_loss_mask(loss, 0.95)),
        (f"superpixel_argmax (sort, {n_seg} sp)", lambda: superpixel_argmax(probs, ids)),
        ("superpixel_argmax (max_id)", lambda: superpixel_argmax(probs, ids, max_id=max_id)),
        ("transfer_masks + derangement + 4x mix", km),
        ("weak_intensity_view", lambda: weak_intensity_view(x)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    rows = []
    for name, b, spatial in (("2D 12x1x64x64", 12, (64, 64)), ("3D 2x1x128^3", 2, (128, 128, 128))):
        for label, fn in _cases(b, spatial, device, g):
            rows.append((name, label, _time(fn, device, args.repeats)))
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} repeats={args.repeats}")
    print("| batch | function | ms/call (min) |\n|---|---|---:|")
    for name, label, ms in rows:
        print(f"| {name} | {label} | {ms:.1f} |")


if __name__ == "__main__":
    main()
