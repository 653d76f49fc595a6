"""The epoch's StepSchedule from the settings (nnunet_gsd.training.schedule)."""
import dataclasses

from nnunet_gsd.method.step import StepSchedule
from nnunet_gsd.settings import SETTING, GSDSettings
from nnunet_gsd.training.schedule import step_schedule


def test_schedule_starts_kt_and_sglr_at_their_own_epochs():
    """KT from epoch 0 (gsd_kt_warmup_fraction = 0), SGLR after 3 of 10 warm-up epochs; the paper's schedule starts
    both at 3."""
    settings = GSDSettings.from_values(tau=0.1, use_kt=True)
    at = {e: step_schedule(settings, e, 10, 2.0, warmup_epochs=3, kt_warmup_epochs=0) for e in (0, 2, 3)}
    assert [at[e].use_kt for e in (0, 2, 3)] == [True, True, True]
    assert [at[e].refinement for e in (0, 2, 3)] == ["none", "none", "superpixel"]
    paper = {e: step_schedule(settings, e, 10, 2.0, warmup_epochs=3, kt_warmup_epochs=3) for e in (2, 3)}
    assert (paper[2].use_kt, paper[3].use_kt) == (False, True)
    no_kt = GSDSettings.from_values(use_kt=False)
    assert not step_schedule(no_kt, 5, 10, 2.0, warmup_epochs=3, kt_warmup_epochs=0).use_kt


def test_every_schedule_field_named_like_a_setting_takes_its_value():
    """A setting added to StepSchedule needs no copying by hand: its value arrives by name."""
    settings = GSDSettings.from_values(tau=0.2, lam=0.7, selection="pooled", refine_confidence=0.4, rho=0.3,
                                       refine_majority=False, ignore_unrefined=False, gda_dice=False, use_gda=True,
                                       kt_prior_correction=True)
    s = step_schedule(settings, 5, 10, 3.0, warmup_epochs=0, kt_warmup_epochs=0)
    assert (s.lam, s.selection, s.refine_confidence, s.rho) == (0.7, "pooled", 0.4, 0.3)
    assert (s.refine_majority, s.ignore_unrefined, s.gda_dice, s.use_gda, s.kt_prior_correction) == (
        False, False, False, True, True)
    # R(e) after the ramp (e_ramp = 1 epoch of 10): 1 − τ; the epoch's own values are not settings
    assert (s.keep, s.epoch, s.num_epochs, s.threshold) == (0.8, 5, 10, 3.0)
    epoch_fields = {"keep", "epoch", "num_epochs"}
    assert {f.name for f in dataclasses.fields(StepSchedule)} - epoch_fields <= set(SETTING)
