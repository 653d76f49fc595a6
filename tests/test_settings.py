"""Settings: precedence (environment > class attribute; τ: environment > dataset.json > default) and errors."""
from __future__ import annotations

import pytest

from nnunet_gsd.errors import UserError
from nnunet_gsd.settings import DEFAULT_TAU, resolve_settings

DEFAULTS = dict(tau=None, lam=0.5, ramp_fraction=0.1, threshold=None, use_gda=True, refinement="superpixel",
                use_kt=True, warmup_fraction=0.3, rho=0.5, slic_segments_per_256sq=1024, slic_compactness=10.0,
                slic_sigma=1.0, keep_last_k=0, log_search_loss=False, gda_dice=True, selection="per_class",
                refine_confidence=0.8, refine_majority=True, estimate_tau=True, ignore_unrefined=False)


def resolve(dataset_json=None, env=None, **overrides):
    attrs = dict(DEFAULTS, **overrides)
    return resolve_settings(attrs.__getitem__, dataset_json or {}, env or {})


def test_tau_precedence():
    assert resolve().tau == DEFAULT_TAU and resolve().tau_source == "default"
    assert resolve({"gsd": {"tau": 0.12}}).tau == 0.12
    assert resolve({"gsd": {"tau": 0.12}}, {"nnUNet_GSD_TAU": "0.2"}).tau == 0.2
    assert resolve({"gsd": {"tau": 0.12}}, tau=0.3).tau == 0.3  # a variant's class attribute beats the dataset


def test_environment_overrides_class_attributes():
    s = resolve(env={"nnUNet_GSD_LAMBDA": "1", "nnUNet_GSD_T": "4", "nnUNet_GSD_WARMUP": "0",
                     "nnUNet_GSD_RHO": "0.25", "nnUNet_GSD_KEEP_LAST": "10"})
    assert (s.lam, s.threshold, s.warmup_fraction, s.rho, s.keep_last_k) == (1.0, 4.0, 0.0, 0.25, 10)


@pytest.mark.parametrize("env, message", [
    ({"nnUNet_GSD_TAU": "abc"}, "nnUNet_GSD_TAU='abc' is not a number"),
    ({"nnUNet_GSD_TAU": "1.0"}, "tau=1.0"),
    ({"nnUNet_GSD_TAU": "-0.1"}, "[0, 1)"),
    ({"nnUNet_GSD_KEEP_LAST": "2.5"}, "nnUNet_GSD_KEEP_LAST='2.5' is not an integer"),
    ({"nnUNet_GSD_RHO": "0"}, "rho=0.0"),
    ({"nnUNet_GSD_LOG_SEARCH_LOSS": "maybe"}, "is not a boolean"),
])
def test_bad_environment_values_name_the_setting(env, message):
    with pytest.raises(UserError, match=None) as info:
        resolve(env=env)
    assert message in str(info.value)


def test_bad_class_attribute_and_dataset_value():
    with pytest.raises(UserError, match="refinement='bands'"):
        resolve(refinement="bands")
    with pytest.raises(UserError, match='"tau": \'x\''):
        resolve({"gsd": {"tau": "x"}})
