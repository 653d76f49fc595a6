"""bench/quality.py: a work folder holding only new arms reports beside the arms its results file already holds."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import quality  # noqa: E402
from bench.workdirs import open_state  # noqa: E402


def args_for(tmp_path: Path, iterations: int = 2500):
    return quality.parse_args(["--regimes", "heavy_S_R", "--iterations", str(iterations), "--batch", "8",
                               "--no-faithful", "--work", str(tmp_path / "work"),
                               "--results", str(tmp_path / "res"), "--report-only"])


def write_results(tmp_path: Path, args, arms: dict, controls: dict = None) -> None:
    (tmp_path / "res.json").write_text(json.dumps({
        "regimes": {"heavy_S_R": {"arms": arms, "controls": controls or {}, "measured": {
            "date": "2026-12-02", "command": ["run A", "run B"]}}},
        "budget": quality.results_budget(args), "command": "a later run", "date": "2026-12-02"}))


def test_kept_arms_with_per_case_dice_pair_with_new_ones(tmp_path):
    args = args_for(tmp_path)
    arms = {a.name: a for a in quality.arms_of(args)}
    write_results(tmp_path, args, {"stock_noisy": {"dice": 50.0, "missed": 0.0,
                                                   "per_case": {"a": {"1": 40.0}, "b": {"1": 60.0}}}})
    kept = quality.kept_runs(args, list(arms.values()), {})
    base = kept[arms["stock_noisy"].run_key(args)]
    assert base["measured"] == {"date": "2026-12-02", "command": ["run A", "run B"]}
    new = {"evaluated": True, "per_case": {"a": {"1": 43.0}, "b": {"1": 61.0}}}
    d, se = quality.paired(new, base)
    # differences 3 and 1: mean 2, sample s.d. sqrt(2), s.e. sqrt(2)/sqrt(2) = 1
    assert abs(d - 2.0) < 1e-12 and abs(se - 1.0) < 1e-12


def test_kept_arms_without_per_case_report_means_and_their_stored_pairing(tmp_path):
    args = args_for(tmp_path)
    arms = {a.name: a for a in quality.arms_of(args)}
    write_results(tmp_path, args,
                  {"stock_noisy": {"dice": 47.7, "missed": 13.3},
                   "gsd_noisy": {"dice": 68.3, "missed": 4.0, "delta_vs_stock_noisy": 20.6, "delta_se": 1.2}},
                  {"gsd_noisy_vs_stock_ensemble": {"delta": 19.7, "delta_se": 1.1}})
    kept = quality.kept_runs(args, list(arms.values()), {})
    gsd = kept[arms["gsd_noisy"].run_key(args)]
    assert quality.mean_dice(gsd) == 68.3 and quality.missed_share(gsd) == 4.0
    assert gsd["delta"] == (20.6, 1.2) and gsd["controls"] == {"stock_ensemble": (19.7, 1.1)}
    new = {"evaluated": True, "per_case": {"a": {"1": 43.0}}}
    assert quality.paired(new, gsd) is None and quality.averaged([new, gsd]) == {}


def test_a_run_started_here_supersedes_its_kept_entry_and_other_budgets_are_not_kept(tmp_path):
    args = args_for(tmp_path)
    arms = {a.name: a for a in quality.arms_of(args)}
    write_results(tmp_path, args, {"stock_noisy": {"dice": 47.7, "missed": 13.3}})
    started = {arms["stock_noisy"].run_key(args): {"started": True}}
    assert quality.kept_runs(args, list(arms.values()), started) == {}
    assert quality.kept_runs(args_for(tmp_path, iterations=850), list(arms.values()), {}) == {}


def test_the_raters_benchmark_shares_the_training_environment(tmp_path):
    from bench import raters
    args = raters.parse_args(["--work", str(tmp_path / "work"), "--results", str(tmp_path / "res")])
    env = quality.nnunet_env(args, {"nnUNet_n_proc_DA": "1"})
    assert env["nnUNet_raw"] == str(args.work / "nnUNet_raw") and env["nnUNet_n_proc_DA"] == "1"
    assert "nnUNet_GSD_SNAPSHOT_EVERY" not in env


def test_a_run_of_one_regime_redraws_the_kept_regimes_curves(tmp_path, monkeypatch):
    args = args_for(tmp_path)
    curve = {"5": 50.0, "10": 55.0}
    (tmp_path / "res.json").write_text(json.dumps({
        "regimes": {"clean": {"arms": {}, "curves": {"stock_clean": curve}, "measured": {
            "date": "2026-12-02", "command": "run A"}}},
        "budget": quality.results_budget(args), "command": "run A", "date": "2026-12-02"}))
    drawn = {}
    monkeypatch.setattr(quality, "plot_curves", lambda curves, path: drawn.update(curves=curves, path=path))
    quality.report(args, open_state(args.work, "bench/quality.py", [], True), quality.arms_of(args))
    assert drawn["curves"] == {"clean": {"stock_clean": curve}}
    assert drawn["path"] == tmp_path / "res-curves.png"


def test_a_run_with_other_variants_keeps_the_earlier_variants_rows(tmp_path):
    args = args_for(tmp_path)
    curve = {"5": 60.0, "10": 62.5}
    write_results(tmp_path, args, {
        "stock_noisy": {"dice": 47.7, "missed": 13.3, "trainer": "nnUNetTrainerBudget", "settings": {}, "repeat": 0,
                        "per_case": {"a": {"1": 40.0}, "b": {"1": 60.0}}},
        "gsd_tau_given": {"dice": 71.7, "missed": 0.0, "trainer": "nnUNetTrainerGSD",
                          "settings": {"nnUNet_GSD_TAU": "0.06"}, "repeat": 0,
                          "per_case": {"a": {"1": 70.0}, "b": {"1": 73.4}}}})
    results = json.loads((tmp_path / "res.json").read_text())
    results["regimes"]["heavy_S_R"]["curves"] = {"gsd_tau_given": curve}
    (tmp_path / "res.json").write_text(json.dumps(results))
    quality.report(args, open_state(args.work, "bench/quality.py", [], True), quality.arms_of(args))
    kept = json.loads((tmp_path / "res.json").read_text())["regimes"]["heavy_S_R"]
    assert kept["arms"]["gsd_tau_given"]["dice"] == 71.7
    # paired with the stock_noisy kept beside it: differences 30 and 13.4
    assert abs(kept["arms"]["gsd_tau_given"]["delta_vs_stock_noisy"] - 21.7) < 1e-9
    assert kept["curves"]["gsd_tau_given"] == curve
    assert "| gsd_tau_given |" in (tmp_path / "res.md").read_text()
