"""The record of a run's settings (``fold_X/gsd_settings.json``) and the check of ``--c`` against it.

The resolved values and their sources are written to ``fold_X/gsd_settings.json`` when training
starts; ``nnUNetv2_train --c`` compares them with the current ones and refuses a change of any setting
not marked ``may_change_on_resume`` (the budget and what a run writes may change: training longer with
``--c`` is nnU-Net practice) unless ``nnUNet_GSD_ALLOW_SETTINGS_CHANGE=1`` is set
(:mod:`nnunet_gsd.training.settings_mixin`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from nnunet_gsd.errors import UserError
from nnunet_gsd.utils import write_json_atomic

from .resolve import GSDSettings
from .table import BOOL_WORDS, ALLOW_CHANGE_VARIABLE, SETTING


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
    if raw and raw.lower() not in BOOL_WORDS:
        raise UserError(f"environment variable {ALLOW_CHANGE_VARIABLE}={raw!r} is not a boolean (0 or 1); "
                        f"fix or unset it")
    if refused and not BOOL_WORDS.get(raw.lower(), False):
        raise UserError(f"--c: settings changed since this training started ({path}): "
                        + "; ".join(map(str, refused))
                        + f". Restore them, train from scratch without --c, or set {ALLOW_CHANGE_VARIABLE}=1 to "
                          f"continue with the new ones deliberately")
    return changes
