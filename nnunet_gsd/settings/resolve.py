"""Resolving a run's settings from the table: one reader, one error style.

Every setting of the GSD trainers in one table: one reader, one error style, one record per run.

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
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from nnunet_gsd.errors import UserError

from .table import BOOL_WORDS, ENV_PREFIX, ENVIRONMENT_VARIABLES, GROUPS, SETTING, SETTINGS, Setting


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
        if raw.lower() not in BOOL_WORDS:
            raise ValueError(raw)
        return BOOL_WORDS[raw.lower()]
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
