"""bench/raters.py --keep: earlier trainings pooled with new ones, weighed by their number."""
import json

import pytest

from bench import raters

METRICS = raters.METRICS


def _result(path, arms, **settings):
    base = {"cases": 300, "size": 64, "seed": 0}
    path.write_text(json.dumps({"date": "2026-12-04", "settings": {**base, **settings}, "arms": arms}))
    return str(path)


def _arm(means_per_case, mean_per_training):
    return {"trainer": "nnUNetTrainerBudget", "env": {}, "labels": "sample", "train_s": 600.0,
            "mean_per_training": mean_per_training, "per_rater": {"A1": 80.0},
            "per_case": {m: dict(means_per_case) for m in METRICS}}


def test_kept_trainings_count_once_per_training(tmp_path):
    # two earlier trainings averaged 80 on case a and 60 on case b; one new training scores 86 and 66
    kept = raters.kept_trainings([_result(tmp_path / "r.json", {"stock_sample": _arm({"a": 80.0, "b": 60.0},
                                                                                      [71.0, 69.0])})],
                                 {"cases": 300, "size": 64, "seed": 0})
    assert len(kept) == 2 and {r["training_mean"] for r in kept.values()} == {71.0, 69.0}
    new = {"stock_one_rater|repeat=0": {"arm": "stock_one_rater", "evaluated": True,
                                     "per_case": {"a": {m: 86.0 for m in METRICS}, "b": {m: 66.0 for m in METRICS}}}}
    values = raters.case_values({**kept, **new}, "stock_one_rater", "mean")   # the arm's former name is read
    assert values == pytest.approx({"a": (2 * 80 + 86) / 3, "b": (2 * 60 + 66) / 3})


def test_keep_names_arms_and_refuses_another_set(tmp_path):
    path = _result(tmp_path / "r.json", {"stock_sample": _arm({"a": 1.0}, [1.0]), "gsd_soft": _arm({"a": 2.0}, [2.0])})
    only = raters.kept_trainings([path + ":gsd_soft"], {"cases": 300, "size": 64, "seed": 0})
    assert [r["arm"] for r in only.values()] == ["gsd_soft"]
    with pytest.raises(SystemExit, match="no arm stock_soft"):
        raters.kept_trainings([path + ":stock_soft"], {"cases": 300, "size": 64, "seed": 0})
    with pytest.raises(SystemExit, match="seed"):
        raters.kept_trainings([path], {"cases": 300, "size": 64, "seed": 1})
    with pytest.raises(SystemExit, match="no file"):
        raters.kept_trainings([str(tmp_path / "missing.json")], {"cases": 300, "size": 64, "seed": 0})
    old = _result(tmp_path / "old.json", {"stock_sample": {"mean_per_training": [80.0]}})
    with pytest.raises(SystemExit, match="no per-case values for stock_sample"):
        raters.kept_trainings([old], {"cases": 300, "size": 64, "seed": 0})
