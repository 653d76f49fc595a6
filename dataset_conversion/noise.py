"""Simulated label noise (docs/noise.md): Markov boundary perturbation (S_R, S_E) and erosion/dilation (S_DE).

Pure functions on numpy arrays, 2D and 3D, binary and multi-class. Every random draw comes from the
``numpy.random.Generator`` passed in, so the same seed gives the same noisy mask bit for bit.

Markov perturbation M(T, θ1, θ2) after Yao et al. 2023, as docs/noise.md reads it::

    for t in 1..T:
        with probability θ1 grow  (candidates = background pixels 4-adjacent to foreground; 6 in 3D)
        otherwise           shrink (candidates = foreground pixels 4-adjacent to background)
        each candidate flips independently with probability θ2 (candidates fixed before flipping)
    smooth with a Gaussian (σ = 1, 5×5 / 5×5×5 support) and threshold at 0.5

θ3 (optional, 0 in every preset) flips each pixel independently with that probability after the
threshold: isolated "salt and pepper" annotation slips, which the smoothing would otherwise erase.

S_DE K(k1–k2): per image a fair coin chooses erosion or dilation and the radius is drawn uniformly
from the integers k1..k2; the structuring element is a Euclidean disk/ball. It is computed with a
distance transform (exactly equivalent to a disk footprint, but O(N) whatever the radius), and
pixels outside the image count as unknown, not background, so an object touching the border is
not eaten from the border.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from nnunet_gsd.errors import UserError

#: where the noise is applied: the source resolution, the output size, or PX per spatial axis
NoiseAt = Literal["source", "output"] | int


# ----------------------------------------------------------------------------------------------
# Elementary operations
# ----------------------------------------------------------------------------------------------
def _neighbour_any(mask: np.ndarray) -> np.ndarray:
    """True where any face neighbour (4 in 2D, 6 in 3D) is True; outside the array counts False.

    Slicing is several times faster than ``ndimage.binary_dilation`` for this tiny footprint, and
    this runs T times per mask.
    """
    out = np.zeros_like(mask)
    for axis in range(mask.ndim):
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[axis] = slice(0, -1)
        hi[axis] = slice(1, None)
        out[tuple(hi)] |= mask[tuple(lo)]
        out[tuple(lo)] |= mask[tuple(hi)]
    return out


def _crop_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of the foreground grown by ``margin`` (clipped): the only region M() can touch."""
    coords = np.nonzero(mask)
    return tuple(slice(max(int(c.min()) - margin, 0), min(int(c.max()) + margin + 1, n))
                 for c, n in zip(coords, mask.shape))


def smooth_threshold(mask: np.ndarray, sigma: float = 1.0, radius: int = 2) -> np.ndarray:
    """Gaussian smoothing then threshold at 0.5 (docs/noise.md); ``radius`` 2 gives the 5×5 (5×5×5) kernel."""
    blurred = ndimage.gaussian_filter(mask.astype(np.float32), sigma=sigma, mode="nearest",
                                      truncate=radius / sigma)
    return blurred > 0.5


def markov_chain(mask: np.ndarray, steps: int, theta1: float, theta2: float,
                 rng: np.random.Generator) -> np.ndarray:
    """The T Markov steps of M(T, θ1, θ2) alone, without the smoothing (docs/noise.md); returns bool.

    Vectorised per step: one neighbour test and one random draw per candidate pixel.
    """
    m = np.array(mask, dtype=bool)
    flat = m.reshape(-1)
    grow_draws = rng.random(steps)
    for t in range(steps):
        if grow_draws[t] < theta1:
            cand = ~m & _neighbour_any(m)
        else:
            cand = m & _neighbour_any(~m)
        idx = np.flatnonzero(cand)
        if idx.size:
            flip = idx[rng.random(idx.size) < theta2]
            flat[flip] = ~flat[flip]
    return m


def markov_perturb(mask: np.ndarray, steps: int, theta1: float, theta2: float, rng: np.random.Generator,
                   theta3: float = 0.0, sigma: float = 1.0) -> np.ndarray:
    """M(T=steps, θ1, θ2) on one binary mask (2D or 3D), then smoothing and threshold (docs/noise.md).

    The work is confined to the foreground's bounding box grown by ``steps`` + 3 (the boundary moves
    at most one pixel per step, the kernel reaches 2 more), so the result is identical to running on
    the whole array, and source-resolution noise on 1920×1072 Kvasir masks stays cheap. Returns a
    new bool array; ``mask`` is not modified.
    """
    mask = np.asarray(mask, dtype=bool)
    out = mask.copy()
    if out.any():
        box = _crop_box(out, steps + 3)
        out[box] = smooth_threshold(markov_chain(out[box], steps, theta1, theta2, rng), sigma=sigma)
    else:
        rng.random(steps)  # keep the stream's length independent of the content
    if theta3 > 0:
        out ^= rng.random(out.shape) < theta3
    return out


def erode_dilate(mask: np.ndarray, radius: int, dilate: bool) -> np.ndarray:
    """Binary erosion or dilation by a Euclidean disk/ball of ``radius`` pixels (docs/noise.md, S_DE)."""
    mask = np.asarray(mask, dtype=bool)
    if radius <= 0 or not mask.any() or mask.all():
        return mask.copy()
    if dilate:
        return ndimage.distance_transform_edt(~mask) <= radius
    # Pad with foreground so the border does not act as background (see module docstring).
    padded = np.pad(mask, 1, mode="constant", constant_values=True)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    return (ndimage.distance_transform_edt(padded) > radius)[inner]


# ----------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoisePreset:
    """One named noise setting of Table 3.

    ``kind`` "markov" uses steps/theta1/theta2/theta3/sigma; "morph" uses k1/k2. ``noise_at`` is the
    resolution the noise is applied at by default: "source" (before resizing to ``--size``) or
    "output" (after); it decides whether Table 3's Dice is reproduced (docs/noise.md). Steps and radii are
    in pixels of ``edge``-pixel images: applied at another known edge they are scaled (see
    :func:`scale_preset`).
    """

    name: str
    kind: Literal["markov", "morph"]
    noise_at: NoiseAt = "output"
    steps: int = 0
    theta1: float = 0.0
    theta2: float = 0.0
    theta3: float = 0.0
    sigma: float = 1.0
    k1: int = 0
    k2: int = 0
    edge: int = 256

    def describe(self) -> str:
        if self.kind == "markov":
            extra = f", θ3={self.theta3}" if self.theta3 else ""
            return f"M({self.steps}, {self.theta1}, {self.theta2}{extra})"
        return f"K({self.k1}-{self.k2})"

    def params(self) -> dict[str, Any]:
        d = asdict(self)
        keep = ("steps", "theta1", "theta2", "theta3", "sigma") if self.kind == "markov" else ("k1", "k2")
        return {"preset": self.name, "kind": self.kind, "notation": self.describe(),
                **{k: d[k] for k in keep}}


def _markov(name: str, steps: int, t1: float, t2: float, at: NoiseAt, edge: int = 256) -> NoisePreset:
    return NoisePreset(name=name, kind="markov", steps=steps, theta1=t1, theta2=t2, noise_at=at, edge=edge)


def _morph(k1: int, k2: int, at: NoiseAt, edge: int = 256) -> NoisePreset:
    return NoisePreset(name="S_DE", kind="morph", k1=k1, k2=k2, noise_at=at, edge=edge)


#: the 2D presets of Table 3 at 256² (the paper's image size for the 2D sets)
_2D_AT_OUTPUT = {
    "S_R": _markov("S_R", 200, 0.2, 0.05, "output"),
    "S_E": _markov("S_E", 200, 0.8, 0.05, "output"),
    "S_DE": _morph(9, 11, "output"),
}

#: BraTS: the noise is applied on the native 1-mm grid (240×240×155; the authors' pipeline crops
#: patches instead of resizing), with effective parameters found on a real case: Table 3's S_E
#: M(50, 0.6, 0.05) as stated; S_R M(200, 0.4, 0.05) as 50 steps and S_DE K(2–4) as K(1–2), since as
#: stated they damage the mask far more than Table 3 says. docs/datasets.md has the reasoning,
#: docs/benchmarks.md (Noise fidelity) the measurements.
_BRATS = {
    "S_R": _markov("S_R", 50, 0.4, 0.05, "source", edge=240),
    "S_E": _markov("S_E", 50, 0.6, 0.05, "source", edge=240),
    "S_DE": _morph(1, 2, "source", edge=240),
}

#: Preset families: Table 3 per dataset ("2d": the generic 2D row, used by generated data). Kvasir's
#: S_R/S_E are applied at the source resolution and the other 2D presets at the output size: the
#: combination that reproduces Table 3's Dice(nGT, GT) (docs/noise.md, bench/noise_fidelity.py).
PRESETS: dict[str, dict[str, NoisePreset]] = {
    "kvasir": {
        "S_R": _markov("S_R", 200, 0.2, 0.05, "source"),
        "S_E": _markov("S_E", 200, 0.8, 0.05, "source"),
        "S_DE": _morph(9, 11, "output"),
    },
    # S_DE radii measured on real masks (docs/benchmarks.md, Noise fidelity): K(9-11) damages the
    # BU_SUC tumours and the Shenzhen lungs more than Table 3 says
    "shenzhen": {**_2D_AT_OUTPUT, "S_DE": _morph(8, 10, "output")},
    "bu_suc": {**_2D_AT_OUTPUT, "S_DE": _morph(7, 9, "output")},
    "brats2020": _BRATS,
    "2d": _2D_AT_OUTPUT,
}

PRESET_NAMES = ("S_R", "S_E", "S_DE")

#: --noise markov without --markov-*: the paper's steps and V with a neutral preference P
MARKOV_DEFAULTS = (200, 0.5, 0.05)


def scale_preset(preset: NoisePreset, factor: float) -> NoisePreset:
    """The preset with Markov steps and S_DE radii scaled by ``factor`` (an image-edge ratio).

    Both act in pixels (one step moves the boundary by about a pixel; radii are in pixels), so an image
    ``factor`` times the preset's edge needs ``factor`` times as many, for the same displacement
    relative to the object. Tiny images would otherwise be wiped out (200 steps on a 48-px blob).
    """
    edge = max(8, round(preset.edge * factor))
    if preset.kind == "markov":
        return replace(preset, steps=max(10, round(preset.steps * factor)), edge=edge)
    k1 = max(1, round(preset.k1 * factor))
    return replace(preset, k1=k1, k2=max(k1, round(preset.k2 * factor)), edge=edge)


def custom_markov(steps: int, p: float, v: float) -> NoisePreset:
    """The paper's M(T, P, V) with the user's parameters (Fig. 11 sweeps P from 0.2 to 0.8).

    P (Bernoulli preference) is θ1, the probability that a step grows; V (Bernoulli variance) is θ2,
    the flip probability of each candidate pixel. Steps are in pixels of the size the noise is
    applied at and are never rescaled (see ``--noise-at``).
    """
    if steps < 1:
        raise UserError(f"--markov-steps must be at least 1, got {steps}")
    for flag, value in (("--markov-p", p), ("--markov-v", v)):
        if not 0 <= value <= 1:
            raise UserError(f"{flag} is a probability in [0, 1], got {value}")
    return NoisePreset(name="markov", kind="markov", steps=steps, theta1=p, theta2=v)


def parse_noise_at(text: str) -> NoiseAt:
    """``source``, ``output`` or a size in pixels (``--noise-at 256``)."""
    if text in ("source", "output"):
        return text  # type: ignore[return-value]
    try:
        px = int(text)
    except ValueError:
        raise UserError(f"--noise-at must be source, output or a size in pixels, got {text!r}") from None
    if px < 8:
        raise UserError(f"--noise-at must be at least 8 pixels, got {px}")
    return px


def get_preset(family: str | None, name: str, dataset: str | None = None) -> NoisePreset:
    """The preset ``name`` of a preset family (a dataset key, or "2d"); a clear :class:`UserError`."""
    if name not in PRESET_NAMES:
        raise UserError(f"unknown noise preset {name!r}; choose one of none, {', '.join(PRESET_NAMES)}, markov")
    if family not in PRESETS:
        raise UserError(f"dataset {dataset or family!r} has no simulated-noise presets (its noise comes from its "
                        f"raters: use --raters)")
    return PRESETS[family][name]


# ----------------------------------------------------------------------------------------------
# Whole label maps
# ----------------------------------------------------------------------------------------------
def perturb_binary(mask: np.ndarray, preset: NoisePreset, rng: np.random.Generator) -> np.ndarray:
    """Apply ``preset`` to one binary mask; returns bool."""
    if preset.kind == "markov":
        return markov_perturb(mask, preset.steps, preset.theta1, preset.theta2, rng,
                              theta3=preset.theta3, sigma=preset.sigma)
    # Draw both numbers even for an empty mask so one case's content never shifts another's stream.
    dilate = bool(rng.random() < 0.5)
    radius = int(rng.integers(preset.k1, preset.k2 + 1))
    return erode_dilate(mask, radius, dilate)


def apply_noise(label: np.ndarray, preset: NoisePreset, rng: np.random.Generator) -> np.ndarray:
    """Noisy version of an integer label map (0 = background, 1..K classes), same shape and dtype.

    Each foreground class is perturbed in turn, in increasing label order (docs/noise.md). Where several
    perturbed classes claim a pixel, the class that is correct there wins; otherwise the first
    (lowest) claimant. Pixels no class claims become background. One label per pixel, always.
    """
    label = np.asarray(label)
    out = np.zeros_like(label)
    for c in np.unique(label):
        if c == 0:
            continue
        clean_c = label == c
        noisy_c = perturb_binary(clean_c, preset, rng)
        out[noisy_c & ((out == 0) | clean_c)] = c
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two label maps: binary, or the mean over the foreground classes present in either.

    Two empty maps agree perfectly (1.0), which is what an empty clean mask left empty deserves.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    classes = [c for c in np.union1d(np.unique(a), np.unique(b)) if c != 0]
    if not classes:
        return 1.0
    scores = []
    for c in classes:
        ac, bc = a == c, b == c
        scores.append(2.0 * np.count_nonzero(ac & bc) / (np.count_nonzero(ac) + np.count_nonzero(bc)))
    return float(np.mean(scores))
