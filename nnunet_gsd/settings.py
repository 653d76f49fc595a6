"""Every setting of the GSD trainers in one table: one reader, one error style, one record per run.

Where a value comes from, lowest priority first (τ: docs/decisions.md §8):

1. the default in :data:`SETTINGS`;
2. dataset.json ``"gsd": {...}`` — only for settings with a ``dataset_key`` (τ). nnU-Net trains from the
   *preprocessed* copy ``$nnUNet_preprocessed/DatasetX/dataset.json``, so that is the file read and named;
3. a class attribute of the trainer, ``gsd_<name>`` (budget: ``budget_<name>``), which variants set;
4. the setting's environment variable ``nnUNet_GSD_*``, for what users tune per run.

nnU-Net rebuilds trainers from ``inspect.signature(__init__)``, so settings cannot be constructor
arguments; class attributes and the environment are what is left. Nothing is ignored silently: an
``nnUNet_GSD_*`` variable, a ``gsd_*``/``budget_*`` class attribute or a dataset.json ``"gsd"`` key that names
no setting (nor, for dataset.json, what the converters record there: :func:`dataset_values`) is an error
(typos would otherwise train with the default), and every invalid value stops the run with one line
(:class:`~nnunet_gsd.errors.UserError`) naming the setting, where its value came from, and the fix.

The resolved values and their sources are written to ``fold_X/gsd_settings.json`` when training
starts; ``nnUNetv2_train --c`` compares them with the current ones and refuses a change of any setting
not marked ``may_change_on_resume`` (the budget and what a run writes may change: training longer with
``--c`` is nnU-Net practice) unless ``nnUNet_GSD_ALLOW_SETTINGS_CHANGE=1`` is set
(:mod:`nnunet_gsd.training.settings_mixin`).

Adding a setting is one declaration in :data:`SETTINGS` — name, type, default, check, doc, and the
variable if users may set it per run — e.g.::

    Setting("kt_weight", float, 1.0, at_least(0), "weight of L_KT in L_total", env="nnUNet_GSD_KT_WEIGHT"),

It is then validated, overridable by the class attribute ``gsd_kt_weight`` and the environment variable,
logged, recorded in gsd_settings.json, compared on ``--c``, and read as ``trainer.gsd.kt_weight`` (or
``settings.kt_weight`` in the step functions). Checks: :func:`between`, :func:`at_least`,
:func:`positive`, :func:`one_of` or ``None``; ``group="budget"``/``"outputs"`` and
``may_change_on_resume=True`` for settings that do not change the method. Add its row to the README's
settings table (a test checks that every variable is listed there).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from nnunet_gsd.errors import UserError
from nnunet_gsd.utils import write_json_atomic

REFINEMENTS = ("none", "pixel", "superpixel")
SELECTIONS = ("pooled", "per_class")
RATER_MODES = ("off", "sample", "soft")  # training from every rater (nnunet_gsd.training.raters)
ENV_PREFIX = "nnUNet_GSD_"
#: set to 1 to continue (``--c``) although settings changed since the training started
ALLOW_CHANGE_VARIABLE = "nnUNet_GSD_ALLOW_SETTINGS_CHANGE"
RECORD_FILE = "gsd_settings.json"
GROUPS = ("method", "budget", "outputs")
_BOOL_WORDS = {"1": True, "true": True, "t": True, "yes": True, "0": False, "false": False, "f": False, "no": False}


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
@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting. ``default=None`` means "unset" (the value is then derived, e.g. T from the patch size)."""

    name: str
    kind: type                   # bool, int, float or str
    default: Any
    check: Optional[Check]
    doc: str
    env: Optional[str] = None    # environment variable, always nnUNet_GSD_*
    group: str = "method"        # method (the paper), budget (epochs × iterations), outputs (what a run writes)
    dataset_key: Optional[str] = None  # key of dataset.json's "gsd" block that may set it
    may_change_on_resume: bool = False
    example: Any = None          # a valid value the error messages suggest where the default is unset (None)

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
            "the paper's 0.05 in nnUNetTrainerGSDFaithful"),
    Setting("lam", float, 0.5, at_least(0), "λ of the symmetric KL term in L_pick (Eq. 4)", env="nnUNet_GSD_LAMBDA"),
    Setting("ramp_fraction", float, 0.1, between(0, 1, low_open=True), "e_ramp / E of R(e)"),
    Setting("threshold", float, None, positive("pixels; unset scales it with the patch size"),
            "T of Eq. 9; unset = 10 · (in-plane patch edge) / 256, at least 2", env="nnUNet_GSD_T", example=10.0),
    Setting("use_gda", bool, False, None,
            "GDA weights (Eq. 7–10; on in nnUNetTrainerGSDFaithful); off = W ≡ 1 (docs/decisions.md §4)",
            env="nnUNet_GSD_USE_GDA"),
    Setting("refinement", str, "superpixel", one_of(*REFINEMENTS),
            '"superpixel" (SGLR), "pixel" (LR ablation) or "none"', env="nnUNet_GSD_REFINEMENT"),
    Setting("use_kt", bool, False, None,
            "Knowledge Transfer (Eq. 15–18; on in nnUNetTrainerGSDFaithful); off by default: its pastes double the "
            "foreground share of the mixed labels (docs/decisions.md §6)", env="nnUNet_GSD_USE_KT"),
    Setting("gda_dice", bool, True, None, "add nnU-Net's soft Dice on D_clean to L_GDA (ours; paper: CE + KL only)",
            env="nnUNet_GSD_GDA_DICE"),
    Setting("selection", str, "per_class", one_of(*SELECTIONS),
            '"pooled" (Eq. 5 over the batch) or "per_class" (Eq. 5 within each nGT class)', env="nnUNet_GSD_SELECTION"),
    Setting("refine_confidence", float, 0.0, between(0, 1),
            "κ: refine a rejected pixel only if its vote's mean probability ≥ κ (0: Eq. 14)",
            env="nnUNet_GSD_REFINE_CONFIDENCE"),
    Setting("refine_majority", bool, True, None,
            "SGLR: refine only where the vote is also the superpixel's majority nGT label",
            env="nnUNet_GSD_REFINE_MAJORITY"),
    Setting("ignore_unrefined", bool, True, None,
            "leave rejected, unrefined pixels out of L_KT (paper: they keep nGT there)",
            env="nnUNet_GSD_IGNORE_UNREFINED"),
    Setting("deep_supervision", bool, True, None,
            "nnU-Net's deep supervision: the lower decoder outputs learn what the full-resolution terms learn",
            env="nnUNet_GSD_DEEP_SUPERVISION"),
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
            "shrink (N < 0) every class", env="nnUNet_GSD_BOUNDARY_OFFSET"),
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
    Setting("keep_last_k", int, 0, at_least(0), "keep the weights of the last K epochs (paper's protocol); 0 = off",
            env="nnUNet_GSD_KEEP_LAST", group="outputs", may_change_on_resume=True),
    Setting("log_search_loss", bool, False, None, "also log L_search (Eq. 20) per epoch, for the τ search",
            env="nnUNet_GSD_LOG_SEARCH_LOSS", group="outputs", may_change_on_resume=True),
    Setting("profile", bool, False, None, "log milliseconds per phase of the training step (adds device syncs)",
            env="nnUNet_GSD_PROFILE", group="outputs", may_change_on_resume=True),
)
SETTING: Dict[str, Setting] = {s.name: s for s in SETTINGS}
ENVIRONMENT_VARIABLES = tuple(s.env for s in SETTINGS if s.env) + (ALLOW_CHANGE_VARIABLE,)



# ---------------------------------------------------------------------------------------------- result
@dataclasses.dataclass(frozen=True)
class GSDSettings:
    """Resolved settings of one run: ``settings.tau`` reads a value, ``sources['tau']`` says where it came from.

    ``notes`` are things worth a line in the training log (a value that exists but is not used).
    """

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    notes: Tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"no setting {name!r} was resolved for this trainer (settings: {sorted(values)})")

    @classmethod
    def from_values(cls, groups: Sequence[str] = GROUPS, **values: Any) -> GSDSettings:
        """Defaults with ``values`` set like class attributes, validated (for code and tests that need settings)."""
        attrs = {SETTING[n].attribute if n in SETTING else n: (v, "GSDSettings.from_values") for n, v in values.items()}
        return resolve_settings(attrs, env={}, groups=groups)

    def replace(self, name: str, value: Any, source: str) -> GSDSettings:
        return dataclasses.replace(self, values={**self.values, name: value}, sources={**self.sources, name: source})

    def summary(self) -> str:
        """``name=value`` for every setting; the source in brackets where it is not the default."""
        return ", ".join(f"{n}={v}" + ("" if self.sources[n] == "default" else f" [{self.sources[n]}]")
                         for n, v in self.values.items())

    def record(self) -> Dict[str, Dict[str, Any]]:
        """``{name: {"value", "source"}}``, the ``settings`` block of ``gsd_settings.json``."""
        return {n: {"value": v, "source": self.sources[n]} for n, v in self.values.items()}


def effective_tau(settings: GSDSettings) -> float:
    """The forget rate a run trains with: τ where one is given, else ``fallback_tau``."""
    return settings.tau if settings.tau is not None else settings.fallback_tau


# ---------------------------------------------------------------------------------------------- reader
def preprocessed_copy_advice(raw_file: str, used_file: str = "this preprocessed copy") -> str:
    """How to change a dataset.json setting so that training sees it (nnU-Net reads the preprocessed copy)."""
    return (f"nnU-Net trains from {used_file}, not from {raw_file}: edit both, or edit the raw one and then copy "
            f"it over or rerun nnUNetv2_plan_and_preprocess")


def _fix(setting: Setting, source: str, dataset_advice: str) -> str:
    if source.startswith("environment variable"):
        return f"fix or unset {setting.env} (e.g. `export {setting.env}={setting.suggestion}`)"
    if source.startswith("class attribute"):
        return f"fix {source.split()[-1]}"
    if source.startswith("dataset.json"):
        return (f'fix "gsd": {{"{setting.dataset_key}"}} there, e.g. "gsd": {{"{setting.dataset_key}": '
                f'{json.dumps(setting.suggestion)}}} ({dataset_advice})'
                + (f", or set {setting.env} to override it" if setting.env else ""))
    return "this is a bug in nnunet_gsd's defaults: please report it"


def _error(setting: Setting, value: Any, source: str, problem: str, dataset_advice: str) -> UserError:
    """The one error style: setting, value, where it came from, what is wrong, how to fix it."""
    return UserError(f"setting {setting.name}={value!r} from {source} {problem}; "
                     f"{_fix(setting, source, dataset_advice)}")


def _kind_name(kind: type) -> str:
    return {bool: "a boolean (0 or 1)", int: "an integer", float: "a number", str: "a string"}[kind]


def _parse_text(setting: Setting, raw: str) -> Any:
    """An environment (or dataset.json string) value as the setting's type; ValueError when it is not one."""
    raw = raw.strip()
    if setting.kind is bool:
        if raw.lower() not in _BOOL_WORDS:
            raise ValueError(raw)
        return _BOOL_WORDS[raw.lower()]
    return setting.kind(raw)


def _typed(setting: Setting, value: Any, source: str, advice: str) -> Any:
    """A class attribute or dataset.json value as the setting's type (int → float allowed), else the one error.

    Both sources are typed (Python, JSON), so both take the same rule: a number written as a string is refused
    (only the environment, which holds nothing but strings, is parsed)."""
    if setting.kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if setting.kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if setting.kind in (bool, str) and isinstance(value, setting.kind):
        return value
    try:  # "0.1": say what to change (booleans are spelt differently in Python and JSON: no hint there)
        quoted = isinstance(value, str) and setting.kind in (int, float) and _parse_text(setting, value) is not None
    except ValueError:
        quoted = False
    problem = f"is not {_kind_name(setting.kind)}" + (" (write it without quotes)" if quoted else "")
    raise _error(setting, value, source, problem, advice)


def _unknown(kind: str, name: str, known: Sequence[str], fix: str, what: str = "GSD setting") -> UserError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return UserError(f"{kind} {name} names no {what}{hint}; {fix}")


#: keys of dataset.json's "gsd" block that set a setting
DATASET_SETTING_KEYS = tuple(s.dataset_key for s in SETTINGS if s.dataset_key)
#: keys ``nnunet_gsd search-tau --write`` adds beside ``tau`` (the converters' keys are :class:`Provenance` fields)
SEARCH_TAU_KEYS = ("tau_before_search", "tau_search")


def _provenance_keys() -> Tuple[str, ...]:
    # the converters' block is described once, by the Provenance dataclass: its fields are the keys they write
    from nnunet_gsd.dataset_conversion.provenance import Provenance
    return tuple(f.name for f in dataclasses.fields(Provenance) if f.name != "extra")


def dataset_values(dataset_json: Optional[Mapping[str, Any]], file: str, advice: str) -> Dict[str, Any]:
    """``{setting name: typed value}`` from dataset.json's ``"gsd"`` block, validated like the other sources.

    The block must be an object whose keys are settings (:data:`DATASET_SETTING_KEYS`) or what the converters
    and search-tau record there: a typo (``"tauu"``) would otherwise train silently with the default. Values
    are typed as class attributes are; their range is checked on the value a run ends up with (the
    environment may override them). ``advice`` says how to change the file (:func:`preprocessed_copy_advice`).
    """
    if dataset_json is not None and not isinstance(dataset_json, Mapping):
        raise UserError(f"dataset.json {file} holds {type(dataset_json).__name__}, not a JSON object; fix it there "
                        f"({advice})")
    block = (dataset_json or {}).get("gsd")
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise UserError(f'dataset.json {file} "gsd" is {json.dumps(block)}, not an object; fix it there, e.g. '
                        f'"gsd": {{"tau": {SETTING["tau"].suggestion}}} ({advice})')
    known_other = _provenance_keys() + SEARCH_TAU_KEYS
    for key in block:
        if key not in DATASET_SETTING_KEYS and key not in known_other:
            raise _unknown(f'dataset.json {file} "gsd" key', json.dumps(key),
                           [json.dumps(k) for k in DATASET_SETTING_KEYS + known_other],
                           f"rename or remove it there ({advice}); known keys: settings "
                           f"{', '.join(DATASET_SETTING_KEYS)}; recorded by the converters and search-tau "
                           f"{', '.join(known_other)}", what="GSD setting or recorded key")
    values = {}
    for s in SETTINGS:
        if s.dataset_key and block.get(s.dataset_key) is not None:
            values[s.name] = _typed(s, block[s.dataset_key], _dataset_source(file, s), advice)
    return values


def _dataset_source(file: str, setting: Setting) -> str:
    return f'dataset.json {file} "gsd": {{"{setting.dataset_key}"}}'


def resolve_settings(class_attributes: Optional[Mapping[str, Tuple[Any, str]]] = None,
                     env: Mapping[str, str] = os.environ, dataset_json: Optional[Mapping[str, Any]] = None,
                     dataset_json_file: str = "dataset.json",
                     raw_dataset_json_file: str = "$nnUNet_raw/<dataset>/dataset.json",
                     groups: Sequence[str] = GROUPS) -> GSDSettings:
    """Resolve the settings of ``groups``: default < dataset.json < class attribute < environment.

    ``class_attributes`` maps attribute names (``gsd_tau``) to (value, defining class name), see
    :func:`trainer_class_attributes`; an attribute set to None counts as not set. ``dataset_json_file``
    names the file ``dataset_json`` was read from (the preprocessed copy when training). Raises
    :class:`UserError` for an unknown variable or attribute, a value of the wrong type or out of range.
    """
    class_attributes = class_attributes or {}
    by_attribute = {s.attribute: s for s in SETTINGS}
    for attribute in class_attributes:
        if attribute not in by_attribute:
            owner = class_attributes[attribute][1]
            raise _unknown("class attribute", f"{owner}.{attribute}", [f"{owner}.{a}" for a in by_attribute],
                           f"rename or remove it (settings: {', '.join(by_attribute)})")
    for var in env:
        if var.startswith(ENV_PREFIX) and var not in ENVIRONMENT_VARIABLES:
            raise _unknown("environment variable", var, ENVIRONMENT_VARIABLES,
                           f"unset it (known: {', '.join(ENVIRONMENT_VARIABLES)})")

    advice = preprocessed_copy_advice(raw_dataset_json_file)
    from_dataset = dataset_values(dataset_json, dataset_json_file, advice)
    values: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    notes: List[str] = []
    for s in SETTINGS:
        if s.group not in groups:
            if s.env and (env.get(s.env) or "").strip():
                notes.append(f"{s.env} is set but this trainer has no setting {s.name}: not used")
            continue
        value, source = s.default, "default"
        if s.name in from_dataset:
            value, source = from_dataset[s.name], _dataset_source(dataset_json_file, s)
        if class_attributes.get(s.attribute, (None,))[0] is not None:
            value, owner = class_attributes[s.attribute]
            source = f"class attribute {owner}.{s.attribute}"
            value = _typed(s, value, source, advice)
        raw = env.get(s.env) if s.env else None
        if raw is not None and raw.strip():  # an empty variable counts as unset, as in the shell idiom VAR= cmd
            source = f"environment variable {s.env}"
            try:
                value = _parse_text(s, raw)
            except ValueError:
                raise _error(s, raw, source, f"is not {_kind_name(s.kind)}", advice) from None
        if value is not None and s.check is not None and not s.check.ok(value):
            raise _error(s, value, source, f"is invalid: it must be {s.check.rule}", advice)
        values[s.name], sources[s.name] = value, source
    return GSDSettings(values, sources, tuple(notes))


def trainer_class_attributes(cls: type) -> Dict[str, Tuple[Any, str]]:
    """The ``gsd_*`` / ``budget_*`` class attributes of ``cls`` and its bases, with the class defining each."""
    found: Dict[str, Tuple[Any, str]] = {}
    for klass in reversed(cls.__mro__):
        for attribute, value in vars(klass).items():
            if attribute.startswith(("gsd_", "budget_")) and not callable(value) and not isinstance(value, property):
                found[attribute] = (value, klass.__name__)
    return found


def unused_dataset_values(raw_json: Mapping[str, Any], used_json: Mapping[str, Any], settings: GSDSettings,
                          raw_file: str, used_file: str) -> List[str]:
    """Notes for dataset.json settings the raw file holds but training does not see (the copies differ).

    Only where dataset.json decides the value (neither a class attribute nor the environment overrides it).
    Both blocks are validated by :func:`dataset_values` (a broken raw block is an error naming the raw file: the
    next nnUNetv2_plan_and_preprocess copies it) and compared as typed values, so 0.1 and 0.10 agree.
    """
    advice = preprocessed_copy_advice(raw_file, f"the preprocessed copy {used_file}")
    raw_values = dataset_values(raw_json, raw_file, advice)
    used_values = dataset_values(used_json, used_file, advice)
    notes = []
    for s in SETTINGS:
        if not s.dataset_key or s.name not in settings.values or settings.sources[s.name] not in (
                "default", _dataset_source(used_file, s)):
            continue
        if raw_values.get(s.name) != used_values.get(s.name):
            notes.append(f'{raw_file} has "gsd": {{"{s.dataset_key}": {json.dumps(raw_values.get(s.name))}}} but '
                         f'training uses {settings.values[s.name]!r} ({settings.sources[s.name]}): {advice}')
    return notes


# ---------------------------------------------------------------------------------------------- record
@dataclasses.dataclass(frozen=True)
class Change:
    name: str
    old: Any
    old_source: str
    new: Any
    new_source: str

    def __str__(self) -> str:
        return f"{self.name} {self.old!r} ({self.old_source}) → {self.new!r} ({self.new_source})"


def read_record(path: str) -> Optional[dict]:
    """The content of ``gsd_settings.json``, or None when there is none (a run of an earlier version)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
        if not isinstance(record.get("settings"), dict):
            raise ValueError('no "settings" object')
        return record
    except (ValueError, AttributeError) as e:
        raise UserError(f"{path} is not a valid settings record ({e}); restore it, or delete it to continue "
                        f"without comparing the settings") from None


def write_record(path: str, trainer: str, settings: GSDSettings, history: Sequence[dict] = ()) -> dict:
    """Write ``gsd_settings.json``: trainer, every setting's value and source, and the changes made by ``--c``."""
    record = {"trainer": trainer, "settings": settings.record(), "history": list(history)}
    write_json_atomic(path, record)
    return record


def changes_since(record: Mapping[str, Any], settings: GSDSettings) -> Tuple[List[Change], List[str]]:
    """Settings whose value differs from the record, and the names only one of the two knows."""
    recorded = record["settings"]
    changes = [Change(n, recorded[n].get("value"), recorded[n].get("source", "?"), v, settings.sources[n])
               for n, v in settings.values.items() if n in recorded and recorded[n].get("value") != v]
    unmatched = sorted(set(recorded) ^ set(settings.values))
    return changes, unmatched


def check_resume(path: str, record: Mapping[str, Any], settings: GSDSettings,
                 env: Mapping[str, str] = os.environ) -> List[Change]:
    """The changes a continued training (``--c``) may make; UserError naming each one it may not.

    Settings marked ``may_change_on_resume`` may change freely; any other change needs
    ``nnUNet_GSD_ALLOW_SETTINGS_CHANGE=1``.
    """
    changes, _ = changes_since(record, settings)
    refused = [c for c in changes if not SETTING[c.name].may_change_on_resume]
    raw = (env.get(ALLOW_CHANGE_VARIABLE) or "").strip()
    if raw and raw.lower() not in _BOOL_WORDS:
        raise UserError(f"environment variable {ALLOW_CHANGE_VARIABLE}={raw!r} is not a boolean (0 or 1); "
                        f"fix or unset it")
    if refused and not _BOOL_WORDS.get(raw.lower(), False):
        raise UserError(f"--c: settings changed since this training started ({path}): "
                        + "; ".join(map(str, refused))
                        + f". Restore them, train from scratch without --c, or set {ALLOW_CHANGE_VARIABLE}=1 to "
                          f"continue with the new ones deliberately")
    return changes
