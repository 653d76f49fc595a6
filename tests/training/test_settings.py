"""Settings: precedence (default < dataset.json < class attribute < environment), one error shape, the record, --c."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nnunet_gsd.errors import UserError
from nnunet_gsd.settings import (ALLOW_CHANGE_VARIABLE, AS_DEFAULT, ENVIRONMENT_VARIABLES, GROUPS, SETTINGS,
                                 GSDSettings, check_resume, read_record, resolve_settings, trainer_class_attributes,
                                 unused_dataset_values, write_record)

PRE = "/data/nnUNet_preprocessed/Dataset001_X/dataset.json"
RAW = "/data/nnUNet_raw/Dataset001_X/dataset.json"


def resolve(dataset_json=None, env=None, groups=GROUPS, **attributes):
    """Resolve with class attributes ``gsd_<name>=value`` of a class called Variant."""
    attrs = {next(s.attribute for s in SETTINGS if s.name == name): (value, "Variant")
             for name, value in attributes.items()}
    return resolve_settings(attrs, env or {}, dataset_json or {}, PRE, RAW, groups)


# ------------------------------------------------------------------------------------------ precedence
def test_defaults_are_the_documented_ones():
    s = resolve()
    assert (s.tau, s.fallback_tau, s.lam, s.ramp_fraction, s.threshold, s.use_gda, s.refinement, s.use_kt) == (
        None, 0.0, 0.5, 0.1, None, False, "superpixel", False)
    assert (s.warmup_fraction, s.kt_warmup_fraction, s.rho, s.slic_segments_per_256sq, s.slic_compactness,
            s.slic_sigma) == (0.3, 0.3, 0.5, 1024, 10.0, 1.0)
    assert (s.num_epochs, s.num_iterations_per_epoch, s.num_val_iterations_per_epoch) == (None, None, None)
    assert (s.keep_last_k, s.snapshot_every, s.log_search_loss, s.profile) == (0, 0, False, False)
    assert (s.selection, s.gda_dice, s.deep_supervision, s.ignore_unrefined, s.kt_prior_correction) == (
        "per_class", True, True, True, False)
    assert set(s.sources.values()) == {"default"}


def test_tau_precedence_each_layer_beats_the_one_below():
    dataset = {"gsd": {"tau": 0.12}}
    assert (resolve().tau, resolve().sources["tau"]) == (None, "default")
    s = resolve(dataset)
    assert (s.tau, s.sources["tau"]) == (0.12, f'dataset.json {PRE} "gsd": {{"tau"}}')
    s = resolve(dataset, tau=0.3)  # a variant's class attribute beats the dataset
    assert (s.tau, s.sources["tau"]) == (0.3, "class attribute Variant.gsd_tau")
    s = resolve(dataset, {"nnUNet_GSD_TAU": "0.2"}, tau=0.3)  # the environment beats both
    assert (s.tau, s.sources["tau"]) == (0.2, "environment variable nnUNet_GSD_TAU")
    # a class attribute set to None is "not set": the dataset decides again (how a variant undoes its parent)
    assert resolve(dataset, tau=None).tau == 0.12
    # an empty variable counts as unset (the shell idiom `nnUNet_GSD_TAU= nnUNetv2_train ...`)
    assert resolve(dataset, {"nnUNet_GSD_TAU": " "}).tau == 0.12
    # dataset.json is typed like a class attribute: a number written as a string is refused (test below)


def test_effective_tau_is_the_given_one_else_the_fallback():
    from nnunet_gsd.settings import effective_tau
    assert effective_tau(resolve()) == 0.0  # nothing given: no selection, no refinement
    assert effective_tau(resolve(fallback_tau=0.05)) == 0.05  # nnUNetTrainerGSDFaithful: the paper's default
    assert effective_tau(resolve({"gsd": {"tau": 0.12}}, fallback_tau=0.05)) == 0.12
    assert effective_tau(resolve({"gsd": {"tau": 0.0}}, fallback_tau=0.05)) == 0.0  # a given 0 is not "unset"


def test_environment_overrides_class_attributes_for_every_variable():
    env = {"nnUNet_GSD_LAMBDA": "1", "nnUNet_GSD_T": "4", "nnUNet_GSD_WARMUP": "0", "nnUNet_GSD_RHO": "0.25",
           "nnUNet_GSD_KEEP_LAST": "10", "nnUNet_GSD_LOG_SEARCH_LOSS": "yes", "nnUNet_GSD_PROFILE": "1",
           "nnUNet_GSD_NUM_EPOCHS": "7", "nnUNet_GSD_NUM_ITERATIONS": "3", "nnUNet_GSD_NUM_VAL_ITERATIONS": "2"}
    s = resolve(env=env, lam=2.0, threshold=9.0, warmup_fraction=0.5, rho=1.0, keep_last_k=1, num_epochs=4)
    assert (s.lam, s.threshold, s.warmup_fraction, s.rho, s.keep_last_k) == (1.0, 4.0, 0.0, 0.25, 10)
    assert (s.log_search_loss, s.profile) == (True, True)
    assert (s.num_epochs, s.num_iterations_per_epoch, s.num_val_iterations_per_epoch) == (7, 3, 2)
    assert s.sources["num_epochs"] == "environment variable nnUNet_GSD_NUM_EPOCHS"
    assert isinstance(s.lam, float) and isinstance(s.keep_last_k, int)


def test_class_attributes_are_collected_along_the_mro_with_the_defining_class():
    class Base:
        gsd_use_kt = False
        budget_num_epochs = 5

        def gsd_helper(self):  # methods are not settings
            return 1

    class Child(Base):
        gsd_use_kt = True

    assert trainer_class_attributes(Child) == {"gsd_use_kt": (True, "Child"), "budget_num_epochs": (5, "Base")}


def test_groups_limit_what_is_read_and_note_unused_variables():
    s = resolve(env={"nnUNet_GSD_TAU": "0.2", "nnUNet_GSD_NUM_EPOCHS": "3"}, groups=("budget",))
    assert set(s.values) == {"num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch"}
    assert s.num_epochs == 3
    assert s.notes == ("nnUNet_GSD_TAU is set but this trainer has no setting tau: not used",)
    with pytest.raises(AttributeError, match="no setting 'tau'"):
        _ = s.tau


def test_from_values_validates_like_a_class_attribute():
    assert GSDSettings.from_values(refinement="pixel", use_kt=False).refinement == "pixel"
    with pytest.raises(UserError, match="refinement='bands'"):
        GSDSettings.from_values(refinement="bands")


# ------------------------------------------------------------------------------------------ errors
ONE_LINE = re.compile(r"^setting (\w+)=(.+) from (.+) (is not .+|is invalid: it must be .+); (fix .+)$")


@pytest.mark.parametrize("env, name, shown, fix", [
    ({"nnUNet_GSD_TAU": "abc"}, "tau", "'abc'", "is not a number"),
    ({"nnUNet_GSD_TAU": "1.0"}, "tau", "1.0", "[0, 1) (the expected fraction of noisy pixels)"),
    ({"nnUNet_GSD_TAU": "-0.1"}, "tau", "-0.1", "[0, 1)"),
    ({"nnUNet_GSD_KEEP_LAST": "2.5"}, "keep_last_k", "'2.5'", "is not an integer"),
    ({"nnUNet_GSD_RHO": "0"}, "rho", "0.0", "(0, 1]"),
    ({"nnUNet_GSD_LOG_SEARCH_LOSS": "maybe"}, "log_search_loss", "'maybe'", "is not a boolean (0 or 1)"),
    ({"nnUNet_GSD_PROFILE": "on"}, "profile", "'on'", "is not a boolean (0 or 1)"),
    ({"nnUNet_GSD_NUM_EPOCHS": "0"}, "num_epochs", "0", ">= 1"),
    ({"nnUNet_GSD_NUM_ITERATIONS": "ten"}, "num_iterations_per_epoch", "'ten'", "is not an integer"),
    ({"nnUNet_GSD_T": "0"}, "threshold", "0.0", "> 0 (pixels; unset scales it with the patch size)"),
])
def test_bad_environment_value_one_line_naming_setting_source_and_fix(env, name, shown, fix):
    with pytest.raises(UserError) as info:
        resolve(env=env)
    message = str(info.value)
    var = next(iter(env))
    match = ONE_LINE.match(message)
    assert match, message
    assert match.group(1) == name and match.group(2) == shown and match.group(3) == f"environment variable {var}"
    assert fix in message and f"fix or unset {var} (e.g. `export {var}=" in message


def test_bad_class_attribute_names_the_class_and_attribute():
    with pytest.raises(UserError) as info:
        resolve(refinement="bands")
    assert str(info.value) == ("setting refinement='bands' from class attribute Variant.gsd_refinement is invalid: "
                               "it must be one of ('none', 'pixel', 'superpixel'); fix Variant.gsd_refinement")
    with pytest.raises(UserError, match=r"^setting use_kt='yes' from class attribute Variant.gsd_use_kt is not a "
                                        r"boolean \(0 or 1\); fix Variant.gsd_use_kt$"):
        resolve(use_kt="yes")
    with pytest.raises(UserError, match="keep_last_k=2.5 .* is not an integer"):
        resolve(keep_last_k=2.5)


def test_bad_dataset_tau_names_the_preprocessed_file_and_how_to_change_it():
    for value, problem in (("x", "is not a number"), (1.5, "is invalid: it must be in [0, 1)")):
        with pytest.raises(UserError) as info:
            resolve({"gsd": {"tau": value}})
        message = str(info.value)
        assert ONE_LINE.match(message), message
        assert message.startswith(f'setting tau={value!r} from dataset.json {PRE} "gsd": {{"tau"}} {problem}')
        assert (f"nnU-Net trains from this preprocessed copy, not from {RAW}: edit both, or edit the raw one and "
                f"then copy it over or rerun nnUNetv2_plan_and_preprocess") in message
        assert message.endswith("or set nnUNet_GSD_TAU to override it")


@pytest.mark.parametrize("env", [{"nnUNet_GSD_TAU": "1"}, {"nnUNet_GSD_TAU": "x"}, {"nnUNet_GSD_T": "-1"},
                                 {"nnUNet_GSD_NUM_EPOCHS": "0"}, {"nnUNet_GSD_USE_KT": "maybe"}])
def test_the_suggested_fix_is_itself_a_valid_value(env):
    """Every error used to suggest `export nnUNet_GSD_TAU=1`, which τ ∈ [0, 1) refuses."""
    with pytest.raises(UserError) as info:
        resolve(env=env)
    var = next(iter(env))
    suggested = re.search(rf"`export {var}=(.*?)`", str(info.value)).group(1)
    resolve(env={var: suggested})  # accepted
    assert [s.suggestion for s in SETTINGS if s.name == "tau"] == [0.05]


def test_every_setting_suggests_a_value_its_own_check_accepts():
    for s in SETTINGS:
        assert s.check is None or s.check.ok(s.suggestion), s.name
        if s.env:  # and the environment reads the suggested spelling back
            resolve(env={s.env: str(s.suggestion)})


# ------------------------------------------------------------------------------------------ dataset.json "gsd"
def test_dataset_json_values_are_typed_like_class_attributes():
    """A string "0.1" used to be read as τ = 0.1 from dataset.json but refused as a class attribute."""
    with pytest.raises(UserError) as info:
        resolve({"gsd": {"tau": "0.1"}})
    message = str(info.value)
    assert ONE_LINE.match(message), message
    assert message.startswith(f"setting tau='0.1' from dataset.json {PRE} " + '"gsd": {"tau"} is not a number '
                              "(write it without quotes); fix \"gsd\": {\"tau\"} there, e.g. \"gsd\": {\"tau\": 0.05} ")
    with pytest.raises(UserError, match=r"^setting tau='0.1' from class attribute Variant.gsd_tau is not a number "
                                        r"\(write it without quotes\); fix Variant.gsd_tau$"):
        resolve(tau="0.1")
    assert resolve({"gsd": {"tau": 0}}).tau == 0.0 and isinstance(resolve({"gsd": {"tau": 0}}).tau, float)
    with pytest.raises(UserError, match="tau=True .* is not a number"):
        resolve({"gsd": {"tau": True}})


@pytest.mark.parametrize("block", [0.1, "0.1", [0.1], True])
def test_a_gsd_block_that_is_not_an_object_is_one_line(block):
    """`"gsd": 0.1` used to raise AttributeError: 'float' object has no attribute 'get'."""
    with pytest.raises(UserError) as info:
        resolve({"gsd": block})
    message = str(info.value)
    assert message.startswith(f'dataset.json {PRE} "gsd" is {json.dumps(block)}, not an object; fix it there, '
                              'e.g. "gsd": {"tau": 0.05} (nnU-Net trains from this preprocessed copy, not from '
                              f"{RAW}"), message
    assert "\n" not in message


def test_unknown_gsd_keys_are_named_with_a_suggestion_and_the_known_keys():
    """`"gsd": {"tauu": 0.1}` used to train silently with τ unset."""
    with pytest.raises(UserError) as info:
        resolve({"gsd": {"tauu": 0.1}})
    message = str(info.value)
    assert message.startswith(f'dataset.json {PRE} "gsd" key "tauu" names no GSD setting or recorded key '
                              '(did you mean "tau"?); rename or remove it there (nnU-Net trains from'), message
    assert "known keys: settings tau; recorded by the converters and search-tau format_version, dataset, " in message
    assert "tau_search" in message and "\n" not in message


def test_what_the_converters_and_search_tau_record_is_accepted(tmp_path: Path, monkeypatch):
    from nnunet_gsd.dataset_conversion.provenance import Provenance
    from nnunet_gsd.tools.search_tau import write_tau
    full = Provenance(**{f: {} for f in Provenance.__dataclass_fields__ if f != "extra"})
    full.tau = 0.1
    assert resolve({"gsd": full.to_dict()}).tau == 0.1
    # search-tau --write adds its own keys beside tau: a dataset it wrote must still train
    name = "Dataset001_X"
    for root in ("nnUNet_raw", "nnUNet_preprocessed"):
        (tmp_path / root / name).mkdir(parents=True)
        (tmp_path / root / name / "dataset.json").write_text(json.dumps({"gsd": {"tau": 0.2}}))
        monkeypatch.setenv(root, str(tmp_path / root))
    for path in write_tau(name, 0.15, {"grid": [0.1, 0.15]}):
        written = json.loads(path.read_text())
        assert set(written["gsd"]) == {"tau", "tau_source", "tau_before_search", "tau_search"}
        assert resolve(written).tau == 0.15


def test_a_broken_raw_block_is_named_and_equal_values_are_no_disagreement():
    used = {"gsd": {"tau": 0.1}}
    s = resolve(used)
    assert unused_dataset_values({"gsd": {"tau": 0.10}}, used, s, RAW, PRE) == []
    assert unused_dataset_values({"gsd": {"tau": 1e-1, "tau_source": "hand"}}, used, s, RAW, PRE) == []
    for raw, start in (({"gsd": 0.1}, f'dataset.json {RAW} "gsd" is 0.1, not an object'),
                       ({"gsd": {"tau": "0.1"}}, f"setting tau='0.1' from dataset.json {RAW} "),
                       ({"gsd": {"tua": 0.1}}, f'dataset.json {RAW} "gsd" key "tua" names no GSD setting')):
        with pytest.raises(UserError) as info:
            unused_dataset_values(raw, used, s, RAW, PRE)
        assert str(info.value).startswith(start), str(info.value)
        assert f"nnU-Net trains from the preprocessed copy {PRE}, not from {RAW}" in str(info.value)


def test_unknown_environment_variable_and_class_attribute_are_errors_with_a_suggestion():
    with pytest.raises(UserError, match=r"^environment variable nnUNet_GSD_WARMPU names no GSD setting "
                                        r"\(did you mean nnUNet_GSD_WARMUP\?\); unset it \(known: nnUNet_GSD_TAU, "):
        resolve(env={"nnUNet_GSD_WARMPU": "0.5"})
    with pytest.raises(UserError, match=r"^class attribute V.gsd_use_ktt names no GSD setting "
                                        r"\(did you mean V.gsd_use_kt\?\); rename or remove it"):
        resolve_settings({"gsd_use_ktt": (False, "V")}, {})


def test_variables_outside_the_prefix_are_none_of_our_business():
    """Only exact nnUNet_GSD_* names count: a variable that merely contains one (MY_nnUNet_GSD_TAU), another
    case of it (NNUNET_GSD_TAU) or another GSD-ish name changes no setting, is no error and adds no note."""
    settings = resolve(env={"nnUNet_raw": "/x", "OTHER_GSD_THING": "1", "MY_nnUNet_GSD_TAU": "0.2",
                            "NNUNET_GSD_TAU": "0.2", "nnunet_gsd_use_kt": "1"})
    assert (settings.tau, settings.use_kt) == (None, False)
    assert set(settings.sources.values()) == {"default"} and settings.notes == ()


def test_readme_documents_every_environment_variable():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [var for var in ENVIRONMENT_VARIABLES if f"`{var}`" not in readme]
    assert not missing, f"README settings table lacks {missing}"


# ------------------------------------------------------------------------------------------ raw vs preprocessed
def test_raw_dataset_tau_that_training_does_not_see_is_noted():
    used = {"gsd": {"tau": 0.05}}
    s = resolve(used)
    notes = unused_dataset_values({"gsd": {"tau": 0.2}}, used, s, RAW, PRE)
    assert notes == [f'{RAW} has "gsd": {{"tau": 0.2}} but training uses 0.05 (dataset.json {PRE} "gsd": {{"tau"}}): '
                     f"nnU-Net trains from the preprocessed copy {PRE}, not from {RAW}: edit both, or edit the raw "
                     f"one and then copy it over or rerun nnUNetv2_plan_and_preprocess"]
    assert unused_dataset_values({"gsd": {"tau": 0.05}}, used, s, RAW, PRE) == []  # same value: nothing to say
    # the environment decides τ anyway: the copies' disagreement does not matter for this run
    s = resolve(used, {"nnUNet_GSD_TAU": "0.1"})
    assert unused_dataset_values({"gsd": {"tau": 0.2}}, used, s, RAW, PRE) == []


# ------------------------------------------------------------------------------------------ record and --c
def test_record_holds_every_value_and_source(tmp_path: Path):
    s = resolve({"gsd": {"tau": 0.12}}, {"nnUNet_GSD_NUM_EPOCHS": "5"}, use_kt=False)
    path = tmp_path / "fold_0" / "gsd_settings.json"
    write_record(str(path), "Variant", s)
    content = json.loads(path.read_text())
    assert content["trainer"] == "Variant" and content["history"] == []
    assert content["settings"]["tau"] == {"value": 0.12, "source": f'dataset.json {PRE} "gsd": {{"tau"}}'}
    assert content["settings"]["use_kt"] == {"value": False, "source": "class attribute Variant.gsd_use_kt"}
    assert content["settings"]["num_epochs"] == {"value": 5, "source": "environment variable nnUNet_GSD_NUM_EPOCHS"}
    assert content["settings"]["lam"] == {"value": 0.5, "source": "default"}
    assert list(content["settings"]) == [s.name for s in SETTINGS]
    assert read_record(str(path)) == content
    assert not list(path.parent.glob(".*"))  # the atomic write left no temporary file


def test_resume_refuses_each_changed_method_setting_by_name(tmp_path: Path):
    record = {"settings": resolve().record()}
    now = resolve(env={"nnUNet_GSD_TAU": "0.2", "nnUNet_GSD_RHO": "0.25"})
    with pytest.raises(UserError) as info:
        check_resume("fold_0/gsd_settings.json", record, now, env={})
    assert str(info.value) == (
        "--c: settings changed since this training started (fold_0/gsd_settings.json): "
        "tau None (default) → 0.2 (environment variable nnUNet_GSD_TAU); "
        "rho 0.5 (default) → 0.25 (environment variable nnUNet_GSD_RHO). Restore them, train from scratch without "
        f"--c, or set {ALLOW_CHANGE_VARIABLE}=1 to continue with the new ones deliberately")
    changes = check_resume("f", record, now, env={ALLOW_CHANGE_VARIABLE: "1"})
    assert [c.name for c in changes] == ["tau", "rho"]
    with pytest.raises(UserError, match=f"{ALLOW_CHANGE_VARIABLE}='sure' is not a boolean"):
        check_resume("f", record, now, env={ALLOW_CHANGE_VARIABLE: "sure"})


def test_resume_allows_the_budget_and_outputs_and_equal_values_from_another_source():
    record = {"settings": resolve(num_epochs=4).record()}
    now = resolve(env={"nnUNet_GSD_LAMBDA": "0.5", "nnUNet_GSD_NUM_EPOCHS": "5", "nnUNet_GSD_PROFILE": "1"},
                  num_epochs=4)
    assert [(c.name, c.old, c.new) for c in check_resume("f", record, now, env={})] == [
        ("num_epochs", 4, 5), ("profile", False, True)]


def test_unreadable_record_is_a_one_line_error(tmp_path: Path):
    path = tmp_path / "gsd_settings.json"
    path.write_text("{not json")
    with pytest.raises(UserError, match=f"^{re.escape(str(path))} is not a valid settings record .*delete it"):
        read_record(str(path))
    assert read_record(str(tmp_path / "missing.json")) is None


def test_the_faithful_variant_starts_kt_with_sglr():
    from nnunet_gsd.training.variants import nnUNetTrainerGSDFaithful
    s = resolve_settings(trainer_class_attributes(nnUNetTrainerGSDFaithful), {}, {}, PRE, RAW)
    assert (s.warmup_fraction, s.kt_warmup_fraction, s.use_kt, s.kt_prior_correction) == (0.3, 0.3, True, False)


def _as_written(value) -> str:
    """A setting value as the README and docs/decisions.md write it."""
    if isinstance(value, str):
        return f'`"{value}"`'
    return str(value) if isinstance(value, bool) else f"{value:g}"


def test_the_faithful_variant_trains_every_method_setting_at_the_paper_value():
    from nnunet_gsd.training.variants import nnUNetTrainerGSDFaithful
    s = resolve_settings(trainer_class_attributes(nnUNetTrainerGSDFaithful), {}, {}, PRE, RAW)
    method = [x for x in SETTINGS if x.group == "method"]
    assert {x.name: s.values[x.name] for x in method} == {x.name: x.paper_value for x in method}
    defaults = resolve_settings({}, {}, {}, PRE, RAW)
    assert {x.name for x in method if s.values[x.name] != defaults.values[x.name]} == {
        "fallback_tau", "use_gda", "use_kt", "gda_dice", "selection", "refine_majority", "ignore_unrefined",
        "deep_supervision", "boundary_offset"}


def _table_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| `gsd_")]


def test_readme_and_decisions_give_the_paper_value_of_the_settings_table():
    """README: "(Faithful: X)" in the default column exactly where the paper's value departs from the default;
    docs/decisions.md §12: one row per such setting, its paper column starting with that value."""
    root = Path(__file__).resolve().parents[2]
    departs = {x.attribute: x.paper for x in SETTINGS if x.group == "method" and x.paper is not AS_DEFAULT}
    by_attribute = {x.attribute: x for x in SETTINGS}
    noted = {}
    for cells in _table_rows((root / "README.md").read_text()):
        attributes = re.findall(r"`(gsd_\w+)`", cells[0])
        faithful = re.search(r"\(Faithful: (.+?)\)", cells[2])
        if faithful:
            assert len(attributes) == 1, f"README row {cells[0]}: one setting per row with a Faithful value"
            noted[attributes[0]] = faithful.group(1)
    assert noted == {a: _as_written(v) for a, v in departs.items()}
    decisions = (root / "docs" / "decisions.md").read_text()
    section = decisions[decisions.index("## 12."):decisions.index("## 13.")]
    rows = {re.search(r"`(gsd_\w+)`", cells[0]).group(1): cells[2] for cells in _table_rows(section)}
    assert set(departs) <= set(rows)
    for attribute, paper_column in rows.items():
        assert paper_column.startswith(_as_written(by_attribute[attribute].paper_value)), attribute
