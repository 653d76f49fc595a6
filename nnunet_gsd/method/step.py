"""One GSD training step (paper Algorithm 1) as pure functions of tensors.

The step has two halves joined by labels and weights that carry no gradient:

* :func:`selection_half` — from the logits of f1(x) and f2(x'): L_pick, the clean set D_clean, the GDA
  weights W, L_GDA (Eq. 1–10), and the refined labels y (Eq. 11–14);
* :func:`transfer_inputs` + :func:`transfer_losses` — the mixed batch of Knowledge Transfer (Eq. 15) and,
  from the logits of the two networks on it, L_KT and L_cor (Eq. 16–18);
* :func:`deep_supervision_loss` (ours, optional) — nnU-Net's deep supervision of the lower decoder outputs,
  with the labels and mask each half supervises at full resolution.

The trainer runs the network passes, autocast and the backward passes between them; everything that
decides *what* is learnt lives here and is tested on CPU with stand-in networks. No function here
synchronises host and device.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .diagnostics import truth_diagnostics
from .gda import clipped_boundary_distance, gda_loss, gda_weights
from .losses import correlation_loss, kt_loss
from .noise_rate import confident_disagreement, search_loss
from .selection import class_balanced_small_loss_mask, pick_loss, small_loss_mask
from .refinement import (confident_refinement, fuse_probabilities, pixel_argmax, superpixel_majority,
                         superpixel_vote)
from .transfer import derangement, mix, prior_logit_shift, transfer_masks

__all__ = ["StepSchedule", "SelectionHalf", "MixedBatch", "StepFigures", "selection_half", "transfer_inputs",
           "transfer_losses", "select_clean", "distance_weights", "clean_set_dice", "refine",
           "split_scales", "deep_supervision_weights", "deep_supervision_loss", "step_figures"]

#: ``dice(logits, target[:, None], loss_mask=None)`` → negative soft Dice (nnU-Net's MemoryEfficientSoftDiceLoss; the
#: semimetric one of :mod:`nnunet_gsd.method.soft_labels` where targets are soft rater labels)
DiceFn = Callable[..., Tensor]


@dataclass(frozen=True)
class StepSchedule:
    """What the current epoch does (all host values, fixed for an epoch). Fields named like a setting hold that
    setting's value (:func:`nnunet_gsd.training.schedule.step_schedule` builds it), the others the epoch's."""

    keep: float              # R(e), the fraction of pixels kept as clean (Eq. 6)
    epoch: int
    num_epochs: int
    threshold: float         # T of Eq. 8-9
    use_gda: bool
    gda_dice: bool           # add nnU-Net's soft Dice on D_clean to L_GDA (ours; the paper's L_GDA is CE + KL)
    lam: float               # λ of L_pick (Eq. 4)
    selection: str           # "pooled" (Eq. 5, one ranking over the batch) or "per_class" (within each nGT class)
    refinement: str          # "none", "pixel" (LR) or "superpixel" (SGLR) — "none" also during warm-up
    refine_confidence: float  # κ: refine a rejected pixel only where the vote's mean probability ≥ κ (0: Eq. 14)
    refine_majority: bool    # SGLR: ... and only where the vote equals the superpixel's majority nGT label
    ignore_unrefined: bool   # rejected pixels that keep nGT are left out of L_KT (paper: supervised with nGT)
    use_kt: bool             # Knowledge Transfer this epoch (after its own warm-up)
    kt_prior_correction: bool  # L_KT sees the logits shifted by log(π_mix / π) (ours, transfer.prior_logit_shift)
    rho: float               # ρ of the KT masks


@dataclass
class SelectionHalf:
    """The selection half of a step: its loss, what links it to the transfer half, and its figures."""

    loss: Tensor               # L_GDA (+ L_KT's form on the unmixed passes when refining without KT)
    loss_gda: Tensor
    loss_kt_unmixed: Tensor    # refined labels on the unmixed passes (ablation rows +LR/+SGLR); 0 otherwise
    clean_mask: Tensor         # D_clean, bool (B, *spatial)
    weights: Tensor            # W(e), float (B, *spatial)
    refined: Tensor            # y, long (B, *spatial)
    supervised: Tensor         # D_clean ∪ refined pixels: what the unmixed passes learn (L_GDA, deep supervision)
    trusted: Optional[Tensor]  # pixels L_KT supervises: ``supervised``, or None: all of them
    refined_fraction: Tensor   # share of pixels whose label refinement changed
    disagreement: Tensor       # share of pixels where both networks confidently contradict nGT (logged)
    soft_target: Optional[Tensor] = None  # soft rater labels: the raters' fractions, one-hot where refinement changed

    @property
    def target(self) -> Tensor:
        """What the unmixed passes learn (deep supervision, L_KT's unmixed form): the refined labels ``(B, *spatial)``,
        or with soft rater labels :attr:`soft_target` ``(B, C, *spatial)``."""
        return self.refined if self.soft_target is None else self.soft_target


def select_clean(pick: Tensor, labels: Tensor, schedule: StepSchedule, num_classes: int) -> Tensor:
    """D_clean (Eq. 5): the R(e) share of pixels with the smallest L_pick — ranked over the whole batch (the paper,
    ``"pooled"``) or, ours, within each nGT class (``"per_class"``, docs/decisions.md §3). Bool ``(B, *spatial)``."""
    if schedule.selection == "per_class":
        return class_balanced_small_loss_mask(pick, labels, schedule.keep, num_classes)
    return small_loss_mask(pick, schedule.keep)


def distance_weights(labels: Tensor, schedule: StepSchedule, like: Tensor) -> Tensor:
    """W(e) (Eq. 7–9) from each pixel's clipped distance to nGT's boundary; W ≡ 1 with GDA off (our default,
    docs/decisions.md §4). Float, shaped like ``like``."""
    if not schedule.use_gda:
        return torch.ones_like(like)
    return gda_weights(clipped_boundary_distance(labels, schedule.threshold), schedule.epoch, schedule.num_epochs,
                       schedule.threshold)


def clean_set_dice(logits1: Tensor, logits2: Tensor, target: Tensor, clean_mask: Tensor, dice: DiceFn) -> Tensor:
    """Ours, added to L_GDA (the paper's Eq. 10 is CE + KL only): nnU-Net's soft Dice of both networks on D_clean.
    ``target`` is nGT ``(B, 1, *spatial)`` or soft rater labels ``(B, C, *spatial)``."""
    mask = clean_mask[:, None].to(logits1.dtype)
    return dice(logits1, target, loss_mask=mask) + dice(logits2, target, loss_mask=mask)


def refine(logits1: Tensor, logits2: Tensor, labels: Tensor, clean_mask: Tensor, superpixel_ids: Optional[Tensor],
           schedule: StepSchedule, alpha: Optional[Tensor] = None) -> Tensor:
    """The refined labels y (Eq. 11–14): D_clean keeps nGT; every rejected pixel takes the vote of the fused
    probabilities (Eq. 11) over its superpixel (SGLR, Eq. 12–14) or its own argmax (LR). Our gates, off in the
    paper: the vote's mean probability must reach κ (``refine_confidence``), and with SGLR the vote must also be
    the superpixel's majority nGT label (``refine_majority``). ``alpha`` is Eq. 11's fusion weight (uniform when
    None). Long ``(B, *spatial)``; no gradient."""
    if alpha is None:
        alpha = torch.rand((), device=logits1.device)
    fused = fuse_probabilities(logits1.detach(), logits2.detach(), alpha)
    if schedule.refinement == "superpixel":
        proposal, confidence = superpixel_vote(fused, superpixel_ids)
    else:
        proposal = pixel_argmax(fused)
        confidence = fused.gather(1, proposal[:, None])[:, 0]
    gate = None
    if schedule.refine_majority and schedule.refinement == "superpixel":
        gate = proposal == superpixel_majority(labels, superpixel_ids, logits1.shape[1])
    return confident_refinement(labels, clean_mask, proposal, confidence, schedule.refine_confidence, gate)


def selection_half(logits1: Tensor, logits2: Tensor, labels: Tensor, superpixel_ids: Optional[Tensor],
                   schedule: StepSchedule, dice: DiceFn, alpha: Optional[Tensor] = None,
                   soft: Optional[Tensor] = None) -> SelectionHalf:
    """Algorithm 1's first half: L_pick → D_clean → W → L_GDA → refined labels (Eq. 1–14).

    Args:
        logits1, logits2: ``(B, C, *spatial)`` float logits of f1(x) and f2(x').
        labels: ``(B, *spatial)`` long nGT: the training labels as the step sees them (after boundary calibration).
        superpixel_ids: ``(B, *spatial)`` long ids (needed for ``refinement == "superpixel"``).
        schedule: the epoch's :class:`StepSchedule`.
        dice: nnU-Net's soft Dice loss (used by the Dice term of L_GDA and the unmixed L_KT form).
        alpha: fusion weight α of Eq. 11 (a 0-d tensor); drawn uniformly when None.
        soft: ``(B, C, *spatial)`` soft rater labels (the fraction of raters per class), with ``labels`` their
            majority; None: one label per pixel. L_pick's CE terms — so the ranking — and L_GDA (its Dice too)
            learn the fractions; the ranking groups, GDA, refinement and KT use ``labels`` (docs/decisions.md §14).
    """
    num_classes = logits1.shape[1]
    pick = pick_loss(logits1, logits2, labels if soft is None else soft, schedule.lam)      # Eq. 1–4
    clean_mask = select_clean(pick.detach(), labels, schedule, num_classes)                # Eq. 5–6
    weights = distance_weights(labels, schedule, pick)                                     # Eq. 7–9
    loss_gda = gda_loss(pick, clean_mask, weights)                                         # Eq. 10
    if schedule.gda_dice:
        loss_gda = loss_gda + clean_set_dice(logits1, logits2, labels[:, None] if soft is None else soft, clean_mask,
                                             dice)
    with torch.no_grad():
        disagreement = confident_disagreement(logits1.detach(), logits2.detach(), labels)
        # R(e) = 1 (τ = 0, or the ramp's first epoch) rejects no pixel: nothing to refine, so no vote to compute
        refining = schedule.refinement != "none" and schedule.keep < 1.0
        refined = (refine(logits1, logits2, labels, clean_mask, superpixel_ids, schedule, alpha) if refining
                   else labels)                                                            # Eq. 11–14
    changed = refined != labels
    supervised = clean_mask | changed
    trusted = supervised if schedule.ignore_unrefined else None
    soft_target = None
    if soft is not None:
        soft_target = torch.where(changed[:, None], F.one_hot(refined, num_classes).movedim(-1, 1).to(soft.dtype),
                                  soft)
    target = refined if soft_target is None else soft_target
    loss_kt = loss_gda.new_zeros(())
    if schedule.refinement != "none" and not schedule.use_kt:
        # Without KT the refined labels supervise the unmixed passes (ablation rows +LR, +SGLR) in L_KT's
        # form (W-weighted CE + Dice), at no extra network pass.
        loss_kt = kt_loss(logits1, target, weights, dice, trusted) + kt_loss(logits2, target, weights, dice, trusted)
    return SelectionHalf(loss=loss_gda + loss_kt, loss_gda=loss_gda, loss_kt_unmixed=loss_kt,
                         clean_mask=clean_mask, weights=weights, refined=refined, supervised=supervised,
                         trusted=trusted, refined_fraction=changed.float().mean(), disagreement=disagreement,
                         soft_target=soft_target)


@dataclass
class MixedBatch:
    """The KT batch (Eq. 15): sample i's label-shaped region pasted onto its partner."""

    data: Tensor
    view: Tensor
    labels: Tensor
    weights: Tensor
    trusted: Optional[Tensor]
    logit_shift: Optional[Tensor] = None  # (C,) log(π_mix / π) added to the logits L_KT sees; None: no shift

    def adjust(self, logits: Tensor) -> Tensor:
        """``logits`` (B, C, *spatial) as L_KT sees them: shifted by :attr:`logit_shift` when there is one."""
        if self.logit_shift is None:
            return logits
        return logits + self.logit_shift.to(logits.dtype).view(1, -1, *([1] * (logits.ndim - 2)))


def transfer_inputs(data: Tensor, view: Tensor, half: SelectionHalf, num_classes: int, rho: float,
                    generator: Optional[torch.Generator] = None, prior_correction: bool = False) -> MixedBatch:
    """Pair every sample with a random other one and paste its refined-label region onto it (Eq. 15); with
    ``prior_correction``, also the logit shift that keeps the mixes' label prior out of L_KT."""
    partner = derangement(data.shape[0], generator=generator, device=data.device)
    masks = transfer_masks(half.refined, num_classes, rho, generator=generator)
    region = masks[:, 0]
    labels = mix(half.refined, region, partner)
    trusted = None if half.trusted is None else mix(half.trusted, region, partner)
    shift = prior_logit_shift(labels, half.refined, num_classes, trusted, half.trusted) if prior_correction else None
    return MixedBatch(data=mix(data, masks, partner), view=mix(view, masks, partner), labels=labels,
                      weights=mix(half.weights, region, partner), trusted=trusted, logit_shift=shift)


def transfer_losses(mixed1: Tensor, mixed2: Tensor, mixed: MixedBatch, dice: DiceFn) -> tuple[Tensor, Tensor]:
    """``(L_KT, L_cor)`` of the two networks' logits on the mixed batch (Eq. 16–18); L_KT on the shifted logits
    (:meth:`MixedBatch.adjust`), L_cor on the raw ones (it compares the networks with each other: no prior involved)."""
    loss_kt = (kt_loss(mixed.adjust(mixed1), mixed.labels, mixed.weights, dice, mixed.trusted)
               + kt_loss(mixed.adjust(mixed2), mixed.labels, mixed.weights, dice, mixed.trusted))
    return loss_kt, correlation_loss(mixed1, mixed2, mixed.weights)


def split_scales(output: Union[Tensor, Sequence[Tensor]]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """A network's output as ``(full-resolution logits, lower decoder outputs)``; under deep supervision nnU-Net's
    networks return a list, full resolution first; otherwise the second part is empty."""
    if isinstance(output, (list, tuple)):
        return output[0], tuple(output[1:])
    return output, ()


def resize_nearest(x: Tensor, size: Sequence[int]) -> Tensor:
    """``(B, *spatial)`` map resized by nearest neighbour, as nnU-Net downsamples segmentations for deep supervision."""
    return F.interpolate(x[:, None].float(), size=tuple(size), mode="nearest-exact")[:, 0]


def resize_target(labels: Tensor, size: Sequence[int]) -> Tensor:
    """A target resized to a lower output: integer labels ``(B, *spatial)`` by nearest neighbour (nnU-Net's choice),
    class probabilities ``(B, C, *spatial)`` (soft rater labels) by area averaging, so that each lower pixel learns
    the mean of the full-resolution fractions it covers (nearest neighbour would keep one of them)."""
    if labels.ndim == len(size) + 2:
        return F.interpolate(labels, size=tuple(size), mode="area")
    return resize_nearest(labels, size).long()


def deep_supervision_loss(lower1: Sequence[Tensor], lower2: Sequence[Tensor], labels: Tensor, weights: Tensor,
                          mask: Optional[Tensor], dice: DiceFn) -> Tensor:
    """nnU-Net's deep supervision in L_KT's form (W-weighted CE + soft Dice, Eq. 17) on both networks' lower outputs.

    Output ``i`` (1 = the next-to-full resolution) weighs 2^-i relative to the full-resolution terms, the lowest
    output 0 — nnU-Net's weights (``DeepSupervisionWrapper``) without their normalisation, so that the GSD terms at
    full resolution keep their scale. ``labels``, ``weights`` and ``mask`` (None: every pixel) are the ones the
    full-resolution term uses, resized to each output (:func:`resize_target`; ``labels`` may be soft rater labels
    ``(B, C, *spatial)``). Zero when there are no lower outputs.

    Why not nnU-Net's ``DeepSupervisionWrapper`` itself: its targets come from the data pipeline, downsampled
    before the step exists, while these labels, weights and masks are made inside the step (refined labels,
    W(e), D_clean); and it leaves a zero-weight output out of the graph, which makes DDP stop on the lowest
    output's unused parameters (nnU-Net works around that with a 10⁻⁶ weight under DDP). The sum it computes is
    the loop below.
    """
    total = weights.new_zeros(())
    for scale, out1, out2 in zip(deep_supervision_weights(len(lower1)), lower1, lower2):
        size = out1.shape[2:]
        y, w = resize_target(labels, size), resize_nearest(weights, size)
        m = None if mask is None else resize_nearest(mask, size).bool()
        # the lowest output stays in the graph with weight 0: DDP wants every parameter used
        total = total + scale * (kt_loss(out1.float(), y, w, dice, m) + kt_loss(out2.float(), y, w, dice, m))
    return total


def deep_supervision_weights(num_lower: int) -> list[float]:
    """Weights of the lower outputs 1..n relative to full resolution: 2^-i, the lowest 0 (nnU-Net's, unnormalised)."""
    return [0.0 if i == num_lower else 0.5 ** i for i in range(1, num_lower + 1)]


@dataclass
class StepFigures:
    """Every figure a step reports, by name (the trainer logs each as ``gsd_<name>``).

    Optional groups are None when not computed (search loss unless asked for; truth figures without
    clean labels); :meth:`names` and :meth:`values` skip them, so a name and its value cannot drift apart.
    """

    loss: Tensor
    loss_gda: Tensor
    loss_kt: Tensor
    loss_cor: Tensor
    loss_ds: Tensor
    mean_weight: Tensor
    kept_fraction: Tensor
    refined_fraction: Tensor
    disagreement: Tensor
    search_loss: Optional[Tensor] = None
    selection_precision: Optional[Tensor] = None
    noise_rate_selected: Optional[Tensor] = None
    noise_rate_rejected: Optional[Tensor] = None
    noise_rate: Optional[Tensor] = None
    refined_accuracy: Optional[Tensor] = None
    noisy_accuracy: Optional[Tensor] = None
    calibrated_accuracy: Optional[Tensor] = None

    TRUTH = ("selection_precision", "noise_rate_selected", "noise_rate_rejected", "noise_rate",
             "refined_accuracy", "noisy_accuracy", "calibrated_accuracy")

    @classmethod
    def names(cls, search: bool, truth: bool) -> tuple[str, ...]:
        """The figure names a run reports, in order (fixed for the run: nnU-Net's logger wants every key
        every epoch)."""
        out = [f.name for f in dataclasses.fields(cls) if f.name not in cls.TRUTH and f.name != "search_loss"]
        return tuple(out + (["search_loss"] if search else []) + (list(cls.TRUTH) if truth else []))

    def values(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


def step_figures(half: SelectionHalf, loss_kt: Tensor, loss_cor: Tensor, loss_ds: Tensor, loss_total: Tensor,
                 calibrated: Tensor, clean: Optional[Tensor] = None, annotated: Optional[Tensor] = None,
                 logits: Optional[tuple[Tensor, Tensor]] = None) -> StepFigures:
    """The step's figures. ``loss_total`` is what the step backpropagated (L_total, Eq. 19, plus deep supervision),
    logged as it is; ``loss_kt``/``loss_cor`` are the transfer half's (zero without KT), ``loss_ds`` the deep
    supervision of both halves (zero without it). ``calibrated`` are the labels the step selected from (the
    annotations after boundary calibration), ``annotated`` the labels before it (None: the same); ``clean`` adds
    the truth diagnostics, ``logits`` (f1(x), f2(x')) the τ-search loss."""
    truth = (truth_diagnostics(calibrated, clean, half.clean_mask, half.refined, annotated) if clean is not None
             else {})
    search = search_loss(logits[0].detach(), logits[1].detach(), calibrated, half.clean_mask) if logits else None
    return StepFigures(loss=loss_total, loss_gda=half.loss_gda, loss_kt=half.loss_kt_unmixed + loss_kt,
                       loss_cor=loss_cor, loss_ds=loss_ds, mean_weight=half.weights.mean(),
                       kept_fraction=half.clean_mask.float().mean(), refined_fraction=half.refined_fraction,
                       disagreement=half.disagreement, search_loss=search, **truth)
