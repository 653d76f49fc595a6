"""The table of every GSD setting: its type, default, check, the paper's value, and how users set it.

Adding a setting is one declaration in :data:`SETTINGS` — name, type, default, check, doc, and the
variable if users may set it per run — e.g.::

    Setting("kt_weight", float, 1.0, at_least(0), "weight of L_KT in L_total", env="nnUNet_GSD_KT_WEIGHT"),

It is then validated, overridable by the class attribute ``gsd_kt_weight`` and the environment variable,
logged, recorded in gsd_settings.json, compared on ``--c``, and read as ``trainer.gsd.kt_weight`` (or
``settings.kt_weight`` in the step functions). Checks: :func:`between`, :func:`at_least`,
:func:`positive`, :func:`one_of` or ``None``; ``group="budget"``/``"outputs"``/``"checkpoints"`` and
``may_change_on_resume=True`` for settings that do not change the method. Add its row to the README's
settings table (a test checks that every variable is listed there).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

REFINEMENTS = ("none", "pixel", "superpixel")
SELECTIONS = ("pooled", "per_class")
RATER_MODES = ("off", "sample", "soft")  # training from every rater (nnunet_gsd.training.raters)
ENV_PREFIX = "nnUNet_GSD_"
#: set to 1 to continue (``--c``) although settings changed since the training started
ALLOW_CHANGE_VARIABLE = "nnUNet_GSD_ALLOW_SETTINGS_CHANGE"
RECORD_FILE = "gsd_settings.json"
GROUPS = ("method", "budget", "outputs", "checkpoints")
BOOL_WORDS = {"1": True, "true": True, "t": True, "yes": True, "0": False, "false": False, "f": False, "no": False}



# ---------------------------------------------------------------------------------------------- rules
@dataclasses.dataclass(frozen=True)
class Check:
    """A validity rule: ``ok(value)`` and the words that complete "must be …" in the error."""

    ok: Callable[[Any], bool]
    rule: str


def between(low: float, high: float, low_open: bool = False, high_open: bool = False, why: str = "") -> Check:
    """``low ≤ value ≤ high``; an open end excludes that bound (``between(0, 1, high_open=True)`` is [0, 1))."""
    text = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}" + (f" ({why})" if why else "")
    return Check(lambda v: (low < v if low_open else low <= v) and (v < high if high_open else v <= high), text)


def at_least(low: float) -> Check:
    return Check(lambda v: v >= low, f">= {low}")


def positive(why: str = "") -> Check:
    return Check(lambda v: v > 0, "> 0" + (f" ({why})" if why else ""))


def _is_offset(value: str) -> bool:
    return value in ("auto", "off") or value.lstrip("+-").isdigit()


def one_of(*choices: str) -> Check:
    return Check(lambda v: v in choices, f"one of {choices}")


# ---------------------------------------------------------------------------------------------- table
#: ``Setting.paper`` when the paper trains with the default
AS_DEFAULT = type("AsDefault", (), {"__repr__": lambda self: "AS_DEFAULT"})()


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting. ``default=None`` means "unset" (the value is then derived, e.g. T from the patch size)."""

    name: str
    kind: type                   # bool, int, float or str
    default: Any
    check: Optional[Check]
    doc: str
    env: Optional[str] = None    # environment variable, always nnUNet_GSD_*
    group: str = "method"        # method (the paper), budget (epochs × iterations), outputs (what a GSD run
                                 # writes), checkpoints (weights every trainer of this package keeps)
    dataset_key: Optional[str] = None  # key of dataset.json's "gsd" block that may set it
    may_change_on_resume: bool = False
    example: Any = None          # a valid value the error messages suggest where the default is unset (None)
    paper: Any = AS_DEFAULT      # the paper's value where our default departs from it (nnUNetTrainerGSDFaithful)

    def __post_init__(self):
        # an error message must never suggest a value that is itself refused (τ's "=1" once was)
        if self.check is not None and not self.check.ok(self.suggestion):
            raise ValueError(f"setting {self.name}: suggested value {self.suggestion!r} is not {self.check.rule}")

    @property
    def suggestion(self) -> Any:
        """The value error messages suggest: the default, else ``example``, else 1 (budget counts, booleans)."""
        value = next((v for v in (self.default, self.example) if v is not None), 1)
        return int(value) if self.kind is bool else value

    @property
    def paper_value(self) -> Any:
        """The value the paper trains with (method settings; the default where the paper's is not given)."""
        return self.default if self.paper is AS_DEFAULT else self.paper

    @property
    def attribute(self) -> str:
        """The trainer class attribute that sets it."""
        return ("budget_" if self.group == "budget" else "gsd_") + self.name


SETTINGS: Tuple[Setting, ...] = (
    # --- the method (docs/method.md, docs/decisions.md)
    Setting("tau", float, None, between(0, 1, high_open=True, why="the expected fraction of noisy pixels"),
            "forget rate τ of R(e) (Eq. 6); unset = fallback_tau", env="nnUNet_GSD_TAU", dataset_key="tau",
            example=0.05),
    Setting("fallback_tau", float, 0.0, between(0, 1, high_open=True),
            "τ when none is given: 0 = no selection or refinement (docs/decisions.md §8); "
            "the paper's 0.05 in nnUNetTrainerGSDFaithful", paper=0.05),
    Setting("lam", float, 0.5, at_least(0), "λ of the symmetric KL term in L_pick (Eq. 4)", env="nnUNet_GSD_LAMBDA"),
    Setting("ramp_fraction", float, 0.1, between(0, 1, low_open=True), "e_ramp / E of R(e)"),
    Setting("threshold", float, None, positive("pixels; unset scales it with the patch size"),
            "T of Eq. 9; unset = 10 · (in-plane patch edge) / 256, at least 2", env="nnUNet_GSD_T", example=10.0),
    Setting("use_gda", bool, False, None,
            "GDA weights (Eq. 7–10; on in nnUNetTrainerGSDFaithful); off = W ≡ 1 (docs/decisions.md §4)",
            env="nnUNet_GSD_USE_GDA", paper=True),
    Setting("refinement", str, "superpixel", one_of(*REFINEMENTS),
            '"superpixel" (SGLR), "pixel" (LR ablation) or "none"', env="nnUNet_GSD_REFINEMENT"),
    Setting("use_kt", bool, False, None,
            "Knowledge Transfer (Eq. 15–18; on in nnUNetTrainerGSDFaithful); off by default: its pastes double the "
            "foreground share of the mixed labels (docs/decisions.md §6)", env="nnUNet_GSD_USE_KT", paper=True),
    Setting("gda_dice", bool, True, None, "add nnU-Net's soft Dice on D_clean to L_GDA (ours; paper: CE + KL only)",
            env="nnUNet_GSD_GDA_DICE", paper=False),
    Setting("selection", str, "per_class", one_of(*SELECTIONS),
            '"pooled" (Eq. 5 over the batch) or "per_class" (Eq. 5 within each nGT class)', env="nnUNet_GSD_SELECTION",
            paper="pooled"),
    Setting("refine_confidence", float, 0.0, between(0, 1),
            "κ: refine a rejected pixel only if its vote's mean probability ≥ κ (0: Eq. 14)",
            env="nnUNet_GSD_REFINE_CONFIDENCE"),
    Setting("refine_majority", bool, True, None,
            "SGLR: refine only where the vote is also the superpixel's majority nGT label",
            env="nnUNet_GSD_REFINE_MAJORITY", paper=False),
    Setting("ignore_unrefined", bool, True, None,
            "leave rejected, unrefined pixels out of L_KT (paper: they keep nGT there)",
            env="nnUNet_GSD_IGNORE_UNREFINED", paper=False),
    Setting("deep_supervision", bool, True, None,
            "nnU-Net's deep supervision: the lower decoder outputs learn what the full-resolution terms learn",
            env="nnUNet_GSD_DEEP_SUPERVISION", paper=False),
    Setting("warmup_fraction", float, 0.3, between(0, 1), "SGLR starts after this fraction of the epochs",
            env="nnUNet_GSD_WARMUP"),
    Setting("kt_warmup_fraction", float, 0.3, between(0, 1),
            "KT starts after this fraction of the epochs (the paper: with SGLR); 0 = from the start",
            env="nnUNet_GSD_KT_WARMUP"),
    Setting("kt_prior_correction", bool, False, None,
            "shift the logits inside L_KT by log(π_mix/π) so that the mixes' doubled foreground does not teach "
            "over-segmentation (ours)", env="nnUNet_GSD_KT_PRIOR_CORRECTION"),
    Setting("boundary_offset", str, "auto", Check(_is_offset, "'auto', 'off' or a whole number of voxels"),
            "boundary calibration (ours, docs/decisions.md §13): 'auto' estimates per class how far the labels' "
            "outlines sit from the image's edges and moves them there; 'off'; or N voxels to grow (N > 0) or "
            "shrink (N < 0) every class", env="nnUNet_GSD_BOUNDARY_OFFSET", paper="off"),
    Setting("raters", str, "off", one_of(*RATER_MODES),
            'multi-rater sets (labelsTr_A1 … labelsTr_An): "sample" draws one rater each time a case is loaded, '
            '"soft" learns the fraction of raters per class; "off" trains on labelsTr', env="nnUNet_GSD_RATERS"),
    Setting("rho", float, 0.5, between(0, 1, low_open=True), "ρ: KT pastes the foreground when its fraction ≤ ρ",
            env="nnUNet_GSD_RHO"),
    Setting("slic_segments_per_256sq", int, 1024, at_least(1), "SLIC n_segments per 256² pixels (scaled by area)"),
    Setting("slic_compactness", float, 10.0, positive(), "SLIC compactness (docs/decisions.md §5)"),
    Setting("slic_sigma", float, 1.0, at_least(0), "SLIC Gaussian smoothing σ (docs/decisions.md §5)"),
    # --- the budget; unset keeps the trainer's own (nnU-Net: 1000 epochs × 250 iterations, 50 validation)
    Setting("num_epochs", int, None, at_least(1), "training epochs", env="nnUNet_GSD_NUM_EPOCHS",
            group="budget", may_change_on_resume=True, example=100),
    Setting("num_iterations_per_epoch", int, None, at_least(1), "training iterations per epoch",
            env="nnUNet_GSD_NUM_ITERATIONS", group="budget", may_change_on_resume=True, example=250),
    Setting("num_val_iterations_per_epoch", int, None, at_least(1), "validation iterations per epoch",
            env="nnUNet_GSD_NUM_VAL_ITERATIONS", group="budget", may_change_on_resume=True, example=50),
    # --- what a run writes besides nnU-Net's outputs (never the numbers of the training)
    Setting("log_search_loss", bool, False, None, "also log L_search (Eq. 20) per epoch, for the τ search",
            env="nnUNet_GSD_LOG_SEARCH_LOSS", group="outputs", may_change_on_resume=True),
    Setting("profile", bool, False, None, "log milliseconds per phase of the training step (adds device syncs)",
            env="nnUNet_GSD_PROFILE", group="outputs", may_change_on_resume=True),
    # --- weights-only checkpoints besides nnU-Net's (every trainer here: GSD and the stock baselines alike)
    Setting("keep_last_k", int, 0, at_least(0), "keep the weights of the last K epochs (paper's protocol); 0 = off",
            env="nnUNet_GSD_KEEP_LAST", group="checkpoints", may_change_on_resume=True),
    Setting("snapshot_every", int, 0, at_least(0), "keep the weights every N epochs (a learning curve: "
            "`nnunet_gsd last-k --snapshots`); 0 = off", env="nnUNet_GSD_SNAPSHOT_EVERY", group="checkpoints",
            may_change_on_resume=True),
)
SETTING: Dict[str, Setting] = {s.name: s for s in SETTINGS}
ENVIRONMENT_VARIABLES = tuple(s.env for s in SETTINGS if s.env) + (ALLOW_CHANGE_VARIABLE,)


def paper_attributes() -> Dict[str, Any]:
    """``{class attribute: the paper's value}`` for every method setting whose default departs from the paper:
    what :class:`~nnunet_gsd.training.variants.nnUNetTrainerGSDFaithful` sets (docs/decisions.md §12)."""
    return {s.attribute: s.paper for s in SETTINGS if s.group == "method" and s.paper is not AS_DEFAULT}
