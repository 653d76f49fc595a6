"""Every GSD setting in one place: defaults, environment overrides, validation, one log line.

nnU-Net rebuilds trainers from ``inspect.signature(__init__)``, so settings cannot be constructor
arguments. They are class attributes of the trainer (``gsd_*``; variants override them), and the ones
users tune are also read from environment variables, which win over the class attributes. The
forget rate τ has a third source, the dataset (docs/decisions.md §8): ``nnUNet_GSD_TAU``, then dataset.json
``"gsd": {"tau": ...}``, then the class default.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Optional

from nnunet_gsd.dataset_conversion.provenance import from_dataset_json
from nnunet_gsd.errors import UserError

REFINEMENTS = ("none", "pixel", "superpixel")
SELECTIONS = ("pooled", "per_class")
DEFAULT_TAU = 0.05


@dataclasses.dataclass(frozen=True)
class GSDSettings:
    """Effective settings of one training run (docs/method.md, docs/decisions.md §8)."""

    tau: float                  # forget rate τ of R(e) (Eq. 6)
    tau_source: str             # where τ came from, for the log
    lam: float                  # λ of the symmetric KL term in L_pick (Eq. 4)
    ramp_fraction: float        # e_ramp / E of R(e)
    threshold: Optional[float]  # T of Eq. 9; None = scale with the patch (gda.default_threshold)
    use_gda: bool               # GDA weights (Eq. 7–10); off = W ≡ 1 (JoCoR)
    refinement: str             # "superpixel" (SGLR), "pixel" (LR ablation) or "none"
    use_kt: bool                # Knowledge Transfer (Eq. 15–18)
    gda_dice: bool              # add nnU-Net's soft Dice on D_clean to L_GDA (ours; paper: CE + KL only)
    selection: str              # "pooled" (Eq. 5 over the batch) or "per_class" (Eq. 5 within each nGT class)
    refine_confidence: float    # κ: refine a rejected pixel only if its vote's mean probability ≥ κ (0: Eq. 14)
    refine_majority: bool       # SGLR: ... and only where the vote is also the superpixel's majority nGT label
    ignore_unrefined: bool      # leave rejected, unrefined pixels out of L_KT (paper: they keep nGT there)
    estimate_tau: bool          # no τ given: estimate it at the end of warm-up (noise_rate.confident_disagreement)
    warmup_fraction: float      # SGLR and KT start after this fraction of the epochs
    rho: float                  # ρ: KT pastes the foreground when its fraction is ≤ ρ
    slic_segments_per_256sq: int
    slic_compactness: float
    slic_sigma: float
    keep_last_k: int            # keep the weights of the last K epochs (paper's protocol); 0 = off
    log_search_loss: bool       # also log L_search (Eq. 20) per epoch, for the τ search

    def summary(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self))


#: setting -> (environment variable, parser). Only the settings users tune per run.
ENVIRONMENT = {
    "tau": ("nnUNet_GSD_TAU", float),
    "lam": ("nnUNet_GSD_LAMBDA", float),
    "threshold": ("nnUNet_GSD_T", float),
    "warmup_fraction": ("nnUNet_GSD_WARMUP", float),
    "rho": ("nnUNet_GSD_RHO", float),
    "refine_confidence": ("nnUNet_GSD_REFINE_CONFIDENCE", float),
    "selection": ("nnUNet_GSD_SELECTION", str),
    "ignore_unrefined": ("nnUNet_GSD_IGNORE_UNREFINED", lambda raw: _parse_bool("nnUNet_GSD_IGNORE_UNREFINED", raw)),
    "refine_majority": ("nnUNet_GSD_REFINE_MAJORITY", lambda raw: _parse_bool("nnUNet_GSD_REFINE_MAJORITY", raw)),
    "gda_dice": ("nnUNet_GSD_GDA_DICE", lambda raw: _parse_bool("nnUNet_GSD_GDA_DICE", raw)),
    "refinement": ("nnUNet_GSD_REFINEMENT", str),
    "keep_last_k": ("nnUNet_GSD_KEEP_LAST", int),
    "log_search_loss": ("nnUNet_GSD_LOG_SEARCH_LOSS", lambda raw: _parse_bool("nnUNet_GSD_LOG_SEARCH_LOSS", raw)),
}


def _parse_bool(var: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "t", "yes"):
        return True
    if raw.lower() in ("0", "false", "f", "no"):
        return False
    raise ValueError(raw)


def _from_env(name: str, env: Mapping[str, str]) -> Any:
    var, parse = ENVIRONMENT[name]
    raw = env.get(var)
    if raw is None or raw.strip() == "":
        return None
    try:
        return parse(raw)
    except ValueError:
        kind = {int: "an integer", float: "a number"}.get(parse, "a boolean (0 or 1)")
        raise UserError(f"environment variable {var}={raw!r} is not {kind}; fix or unset it "
                        f"(e.g. `export {var}={'10' if parse is int else '0.1'}`)") from None


def _check(ok: bool, setting: str, value: Any, rule: str) -> None:
    if not ok:
        var = ENVIRONMENT.get(setting, (None,))[0]
        where = f" (class attribute gsd_{setting}" + (f" or environment variable {var})" if var else ")")
        raise UserError(f"GSD setting {setting}={value!r}{where} is invalid: it must be {rule}")


def resolve_settings(attrs: Callable[[str], Any], dataset_json: Mapping[str, Any],
                     env: Mapping[str, str] = os.environ) -> GSDSettings:
    """Combine class attributes (``attrs('tau')`` reads ``gsd_tau``), environment and dataset.json.

    Raises :class:`UserError` naming the setting and the fix for malformed or out-of-range values.
    """
    values = {f.name: attrs(f.name) for f in dataclasses.fields(GSDSettings) if f.name != "tau_source"}
    for name in ENVIRONMENT:
        override = _from_env(name, env)
        if override is not None:
            values[name] = override

    tau_source = "class attribute"
    if _from_env("tau", env) is not None:
        tau_source = "nnUNet_GSD_TAU"
    elif values["tau"] is None:
        dataset_tau = from_dataset_json(dataset_json).tau
        if dataset_tau is not None:
            values["tau"], tau_source = dataset_tau, 'dataset.json "gsd": {"tau"}'
        else:
            values["tau"], tau_source = DEFAULT_TAU, "default"

    _check(0 <= values["tau"] < 1, "tau", values["tau"], "in [0, 1) (the expected fraction of noisy pixels)")
    _check(values["lam"] >= 0, "lam", values["lam"], ">= 0")
    _check(0 < values["ramp_fraction"] <= 1, "ramp_fraction", values["ramp_fraction"], "in (0, 1]")
    _check(values["threshold"] is None or values["threshold"] > 0, "threshold", values["threshold"],
           "> 0 (pixels), or unset to scale with the patch size")
    _check(values["refinement"] in REFINEMENTS, "refinement", values["refinement"], f"one of {REFINEMENTS}")
    _check(values["selection"] in SELECTIONS, "selection", values["selection"], f"one of {SELECTIONS}")
    _check(0 <= values["refine_confidence"] <= 1, "refine_confidence", values["refine_confidence"], "in [0, 1]")
    _check(0 <= values["warmup_fraction"] <= 1, "warmup_fraction", values["warmup_fraction"], "in [0, 1]")
    _check(0 < values["rho"] <= 1, "rho", values["rho"], "in (0, 1]")
    _check(values["slic_segments_per_256sq"] >= 1, "slic_segments_per_256sq",
           values["slic_segments_per_256sq"], ">= 1")
    _check(values["slic_compactness"] > 0, "slic_compactness", values["slic_compactness"], "> 0")
    _check(values["slic_sigma"] >= 0, "slic_sigma", values["slic_sigma"], ">= 0")
    _check(isinstance(values["keep_last_k"], int) and values["keep_last_k"] >= 0, "keep_last_k",
           values["keep_last_k"], "an integer >= 0")
    return GSDSettings(tau_source=tau_source, **values)
