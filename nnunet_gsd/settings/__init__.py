"""Every setting of the GSD trainers: the table (:mod:`.table`), how a run resolves them (:mod:`.resolve`), and
the record a run keeps and ``--c`` checks (:mod:`.record`)."""
from .record import Change, changes_since, check_resume, read_record, write_record
from .resolve import (DATASET_SETTING_KEYS, SEARCH_TAU_KEYS, GSDSettings, dataset_values, effective_tau,
                      preprocessed_copy_advice, resolve_settings, trainer_class_attributes, unused_dataset_values)
from .table import (ALLOW_CHANGE_VARIABLE, AS_DEFAULT, ENV_PREFIX, ENVIRONMENT_VARIABLES, GROUPS, RATER_MODES,
                    RECORD_FILE, REFINEMENTS, SELECTIONS, SETTING, SETTINGS, Check, Setting, at_least, between, one_of,
                    paper_attributes, positive)

__all__ = ["Change", "changes_since", "check_resume", "read_record", "write_record", "DATASET_SETTING_KEYS",
           "SEARCH_TAU_KEYS", "GSDSettings", "dataset_values", "effective_tau", "preprocessed_copy_advice",
           "resolve_settings", "trainer_class_attributes", "unused_dataset_values", "ALLOW_CHANGE_VARIABLE",
           "AS_DEFAULT", "ENV_PREFIX", "ENVIRONMENT_VARIABLES", "GROUPS", "RATER_MODES", "RECORD_FILE", "REFINEMENTS",
           "SELECTIONS", "SETTING", "SETTINGS", "Check", "Setting", "at_least", "between", "one_of",
           "paper_attributes", "positive"]
