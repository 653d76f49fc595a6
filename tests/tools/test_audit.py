"""audit: confident-learning scores by hand, the dataset writer, the error lines, the command on fake folds, and
(e2e) on two folds trained by nnU-Net."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import clean_env, run, run_failing
from nnunet_gsd.cli import main
from nnunet_gsd.errors import UserError
from nnunet_gsd.tools import audit

TRAINER = "nnUNetTrainerBudget"


# ---------------------------------------------------------------- scoring, by hand
def four_by_four():
    """A 2×2 object in a 4×4 case. Labelled-1 pixels: p1 = 0.9, 0.9, 0.9 and 0.1 at (2, 2), so t_1 = 2.8/4 = 0.7.
    Background: p0 = 0.95 at ten pixels, 0.2 at (0, 0) and 0.55 at (3, 3), so t_0 = 10.25/12 = 0.8541(6)."""
    label = np.zeros((4, 4), np.int16)
    label[1:3, 1:3] = 1
    p1 = np.full((4, 4), 0.05)
    p1[1:3, 1:3] = 0.9
    p1[2, 2] = 0.1     # labelled 1, but p0 = 0.9 >= t_0 and p1 < t_1: suspected, suggested 0
    p1[0, 0] = 0.8     # labelled 0, but p1 = 0.8 >= t_1 and p0 = 0.2 < t_0: suspected, suggested 1
    p1[3, 3] = 0.45    # labelled 0, p1 = 0.45 < t_1: not confident, not suspected
    return label, np.stack([1 - p1, p1])


def test_thresholds_suspected_pixels_and_scores_by_hand():
    label, probs = four_by_four()
    t = audit.class_thresholds([(label, probs)], 2)
    assert t == pytest.approx([10.25 / 12, 0.7])
    suspected, suggested = audit.suspect(label, probs, t)
    expected = np.zeros((4, 4), bool)
    expected[2, 2] = expected[0, 0] = True
    assert (suspected == expected).all()
    assert suggested[2, 2] == 0 and suggested[0, 0] == 1
    corrected = label.copy()
    corrected[2, 2], corrected[0, 0] = 0, 1
    assert (suggested == corrected).all()   # elsewhere the label itself
    # class 1: L = 4 labelled pixels, S = {(2,2) labelled 1, (0,0) suggested 1}, |L ∪ S| = 5: 1 - 2/5
    assert audit.overlap_quality(label, suspected, suggested, [1]) == {1: pytest.approx(0.6)}
    s = audit.case_scores(label, probs, suspected, [1])
    assert s["suspected_pixels"] == 2 and s["pixels"] == 16 and s["suspected_fraction"] == pytest.approx(2 / 16)


def test_excess_surprisal_by_hand():
    """Region of class 1: the 4 labelled pixels and (0, 0), predicted 1 (p1 = 0.8). H(0.9) = 0.3250830,
    H(0.8) = 0.5004024 nats. Three pixels labelled 1 at p 0.9: -log 0.9 - H = 0.1053605 - 0.3250830 = -0.2197225
    each; (2, 2) labelled 1 at p1 = 0.1: 2.3025851 - 0.3250830 = 1.9775021; (0, 0) labelled 0 at p0 = 0.2:
    1.6094379 - 0.5004024 = 1.1090355. Mean: (3 × -0.2197225 + 1.9775021 + 1.1090355) / 5 = 0.4854740;
    quality exp(-0.4854740) = 0.6154054."""
    label, probs = four_by_four()
    assert audit.class_surprise(label, probs, [1]) == {1: pytest.approx(0.4854740, abs=1e-6)}
    suspected, _ = audit.suspect(label, probs, audit.class_thresholds([(label, probs)], 2))
    s = audit.case_scores(label, probs, suspected, [1])
    assert s["per_class"] == {1: pytest.approx(0.6154054, abs=1e-6)} and s["score"] == s["per_class"][1]
    assert s["surprise"] == pytest.approx(0.4854740, abs=1e-6)


def test_label_error_probability_by_hand():
    label = np.array([[0, 1], [2, 255]])
    probs = np.array([[[0.7, 0.1], [0.2, 0.3]],
                      [[0.2, 0.6], [0.3, 0.3]],
                      [[0.1, 0.3], [0.5, 0.4]]])
    # 1 − p(y): 1 − 0.7, 1 − 0.6, 1 − 0.5; the ignore label 255 is never wrong
    assert np.allclose(audit.label_error_probability(label, probs, ignore_label=255), [[0.3, 0.4], [0.5, 0.0]])


def test_a_label_as_likely_as_an_unsure_model_expects_is_not_surprising():
    """Where the model is unsure the surprisal of its argmax label is below the entropy; a label that contradicts
    a sure model is far above it: uncertainty alone does not make a case look wrong."""
    label = np.array([[0, 1, 1, 0]], np.int16)
    unsure = np.array([[[0.6, 0.4, 0.4, 0.6]], [[0.4, 0.6, 0.6, 0.4]]])
    sure_wrong = np.array([[[0.99, 0.99, 0.01, 0.99]], [[0.01, 0.01, 0.99, 0.01]]])
    assert audit.class_surprise(label, unsure, [1])[1] < 0
    assert audit.class_surprise(label, sure_wrong, [1])[1] > 2
    background_everywhere = np.broadcast_to(np.array([[[1.0]], [[0.0]]]), (2, 1, 4))
    assert np.isnan(audit.class_surprise(np.zeros((1, 4), np.int16), background_everywhere, [1])[1])


def test_multiclass_and_the_ignore_label():
    """Labels 0 1 2 2 (+ ignore 3): t = (0.8, 0.7, 0.45); the last 2 has p2 = 0.1 < 0.45 and p1 = 0.8 >= 0.7."""
    label = np.array([[0, 1, 2, 2, 3]], np.int16)
    probs = np.array([[0.8, 0.1, 0.1, 0.1, 0.1],
                      [0.1, 0.7, 0.1, 0.8, 0.8],
                      [0.1, 0.2, 0.8, 0.1, 0.1]])[:, None]
    t = audit.class_thresholds([(label, probs)], 3, ignore_label=3)
    assert t == pytest.approx([0.8, 0.7, 0.45])     # ignore pixels count for no class
    suspected, suggested = audit.suspect(label, probs, t, ignore_label=3)
    assert suspected.tolist() == [[False, False, False, True, False]]   # p_y = t_y (0.8, 0.7) is not suspected
    assert suggested.tolist() == [[0, 1, 2, 1, 3]]
    # class 1: L = {1}, S = {3} -> 1 - 1/2; class 2: L = {2, 3}, S = {3} -> 1 - 1/2
    assert audit.overlap_quality(label, suspected, suggested, [1, 2], ignore_label=3) == {1: 0.5, 2: 0.5}
    s = audit.case_scores(label, probs, suspected, [1, 2], ignore_label=3)
    assert s["pixels"] == 4 and s["suspected_fraction"] == 0.25
    # the ignore pixel (p1 = 0.8) is in no region: class 1 = pixels 1 (labelled) and 3 (labelled 2, predicted 1)
    h = lambda p: -(p * np.log(p)).sum()  # noqa: E731
    col = probs[:, 0]
    expected_1 = ((-np.log(0.7) - h(col[:, 1])) + (-np.log(0.1) - h(col[:, 3]))) / 2
    assert s["surprise"] == pytest.approx(np.mean([expected_1, ((-np.log(0.8) - h(col[:, 2])) +
                                                                (-np.log(0.1) - h(col[:, 3]))) / 2]))


def test_a_clean_label_is_not_suspected_and_an_absent_class_scores_nan():
    label = np.array([0, 0, 1, 1], np.int16)
    probs = np.array([[0.9, 0.8, 0.3, 0.1], [0.1, 0.2, 0.7, 0.9]])
    probs3 = np.vstack([probs, np.zeros((1, 4))])
    t = audit.class_thresholds([(label, probs3)], 3)
    assert np.isnan(t[2])                       # never labelled: never a confident prediction
    suspected, suggested = audit.suspect(label, probs3, t)
    assert not suspected.any() and (suggested == label).all()
    overlap = audit.overlap_quality(label, suspected, suggested, [1, 2])
    assert overlap[1] == 1.0 and np.isnan(overlap[2])
    s = audit.case_scores(label, probs3, suspected, [1, 2])
    assert s["per_class"][1] > 1.0 and np.isnan(s["per_class"][2])   # as likely as or more than the model expects
    empty = audit.case_scores(np.zeros((2, 2), np.int16), np.stack([np.ones((2, 2)), np.zeros((2, 2))]),
                              np.zeros((2, 2), bool), [1])
    assert empty["score"] == 1.0 and np.isnan(empty["per_class"][1]) and empty["surprise"] == 0.0


def test_rank_is_worst_first_then_most_suspected():
    rows = [{"case": "a", "score": 0.9, "suspected_fraction": 0.1},
            {"case": "b", "score": 0.5, "suspected_fraction": 0.0},
            {"case": "c", "score": 0.9, "suspected_fraction": 0.3}]
    assert [r["case"] for r in audit.rank(rows)] == ["b", "c", "a"]


def test_cleanlab_scorer_on_the_hand_case():
    pytest.importorskip("cleanlab.segmentation")
    label, probs = four_by_four()
    clean = (np.array([[0, 0], [1, 1]], np.int16), np.array([[[0.9, 0.8], [0.1, 0.2]], [[0.1, 0.2], [0.9, 0.8]]]))
    scores, suspected, suggested = audit.cleanlab_scores([label, clean[0]], [probs, clean[1]])
    assert suspected[0].shape == (4, 4) and suspected[1].shape == (2, 2)
    assert not suspected[1].any() and scores[0] < scores[1]
    # cleanlab only reports pixels whose argmax contradicts the label; its suggestion is that argmax
    assert (np.argmax(probs, 0)[suspected[0]] != label[suspected[0]]).all()
    assert suspected[0][2, 2] and suspected[0][0, 0]
    assert (suggested[0][suspected[0]] == np.argmax(probs, 0)[suspected[0]]).all()


def test_cleanlab_is_never_imported_by_the_command_itself():
    """cleanlab is AGPL-3.0 and optional: only --scorer cleanlab imports it."""
    import subprocess
    import sys
    code = ("import sys; from nnunet_gsd import cli; from nnunet_gsd.tools import audit; cli.build_parser(); "
            "sys.exit('cleanlab' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_validation_cases_past_the_split_file_follow_nnunet():
    splits = [{"train": [f"c{i}" for i in range(1, 10)], "val": ["c0"]}]
    assert audit.fold_validation_cases(splits, 0) == ["c0"]
    val = audit.fold_validation_cases(splits, 3)   # nnU-Net's seeded 80:20 split: 2 of 10
    assert len(val) == 2 and val == audit.fold_validation_cases(splits, 3)


# ---------------------------------------------------------------- a fake cross-validation (no training)
def _write_png(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr.astype(np.uint8)).save(path)


def fake_audit(root: Path, classes: int = 1, dim: int = 2, n: int = 6, trainer: str = TRAINER) -> dict:
    """nnU-Net's three folders with a dataset of ``n`` cases, 2 folds whose validation probabilities are written
    (no checkpoint), and one corrupted label: case_0001 has an extra 4×4 object the probabilities reject."""
    rng = np.random.default_rng(0)
    name = "Dataset960_Fake"
    raw, pre = root / "nnUNet_raw" / name, root / "nnUNet_preprocessed" / name
    model = root / "nnUNet_results" / name / f"{trainer}__nnUNetPlans__2d"
    ending = ".png" if dim == 2 else ".nii.gz"
    for d in (raw / "imagesTr", raw / "labelsTr", raw / "imagesTs", raw / "labelsTs", pre):
        d.mkdir(parents=True)
    cases = [f"case_{i:04d}" for i in range(n)]
    splits = [{"train": cases[n // 2:], "val": cases[:n // 2]}, {"train": cases[:n // 2], "val": cases[n // 2:]}]
    (pre / "splits_final.json").write_text(json.dumps(splits))
    shape = (16, 16) if dim == 2 else (4, 16, 16)
    truths = {}
    for i, case in enumerate(cases):
        truth = np.zeros(shape, np.uint8)
        truth[..., 1 + i % 3:7 + i % 3, 1 + i % 3:7 + i % 3] = 1     # class 1: a 6×6 box (per slice)
        if classes == 2:
            truth[..., 10:14, 1:5] = 2                                # class 2: a 4×4 box
        label = truth.copy()
        if case == "case_0001":
            label[..., 12:16, 12:16] = 1                              # an added 4×4 object of class 1
        image = (truth * 80 + rng.integers(0, 40, shape)).astype(np.uint8)
        if dim == 2:
            _write_png(raw / "imagesTr" / f"{case}_0000.png", image)
            _write_png(raw / "labelsTr" / f"{case}.png", label)
        else:
            import SimpleITK as sitk
            for arr, path in ((image.astype(np.float32), raw / "imagesTr" / f"{case}_0000.nii.gz"),
                              (label, raw / "labelsTr" / f"{case}.nii.gz")):
                img = sitk.GetImageFromArray(arr)
                img.SetSpacing((0.5, 0.5, 2.0))
                sitk.WriteImage(img, str(path))
        truths[case] = truth
        fold = 0 if case in splits[0]["val"] else 1
        probs = np.full((classes + 1, *shape), 0.02, np.float32)
        for c in range(classes + 1):
            probs[c][truth == c] = rng.uniform(0.85, 0.95, int((truth == c).sum()))
        if case == "case_0001":
            probs[0][..., 12:16, 12:16] = 0.99                        # confidently background: above t_0
        probs /= probs.sum(0, keepdims=True)
        out = model / f"fold_{fold}" / "validation"
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / f"{case}.npz", probabilities=probs[:, None] if dim == 2 else probs)
    # the test set travels to the audited dataset unchanged
    _write_png(raw / "imagesTs" / "t_0000_0000.png", np.zeros((16, 16)))
    _write_png(raw / "labelsTs" / "t_0000.png", np.zeros((16, 16)))
    labels = {"background": 0, **{f"c{c}": c for c in range(1, classes + 1)}}
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "x"}, "labels": labels, "numTraining": n,
                                                  "file_ending": ending, "name": "Fake", "licence": "none"}))
    return {"name": name, "raw": raw, "model": model, "cases": cases, "truths": truths, "ending": ending}


@pytest.fixture
def nnunet_env(tmp_path: Path, monkeypatch):
    for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(v, str(tmp_path / v))
    return tmp_path


def read_csv(path: Path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("classes,dim", [(1, 2), (2, 2), (1, 3)])
def test_audit_ranks_the_corrupted_case_first_and_writes_its_outputs(nnunet_env, classes, dim, capsys):
    fake = fake_audit(nnunet_env, classes=classes, dim=dim)
    out = nnunet_env / "audit"
    assert main(["audit", "-d", "960", "-c", "2d", "-tr", TRAINER, "--out", str(out), "--top", "3"]) == 0
    rows = read_csv(out / "audit.csv")
    assert [r["case"] for r in rows][0] == "case_0001" and len(rows) == 6
    # class c1's region: 36 pixels labelled as the model expects (p ≈ 0.9: about -0.2 nats each) and the 16 added
    # ones at p1 ≈ 0.02 (about +3.8 nats): a mean near 1 nat, quality near exp(-1); class c2 (if any) is clean
    quality = {c: float(rows[0][f"score_c{c}"]) for c in range(1, classes + 1)}
    assert 0.2 < quality[1] < 0.5 and all(q > 1.0 for c, q in quality.items() if c > 1)
    assert float(rows[0]["score"]) == pytest.approx(np.mean(list(quality.values())), abs=1e-5)
    assert float(rows[0]["surprise_nats"]) > 0.3     # the mean over classes: c2 (if any) lowers it
    assert all(float(r["score"]) > 1.0 and float(r["surprise_nats"]) < 0 and r["suspected_pixels"] == "0"
               for r in rows[1:])   # clean: as likely as the model expects, nothing made up
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 7)]
    report = json.loads((out / "audit.json").read_text())
    assert report["not_scored"] == [] and report["scored_out_of_sample"] == 6 and report["folds"] == [0, 1]
    assert report["cases"][0]["case"] == "case_0001" and report["cases"][0]["fold"] == 0
    assert "Northcutt" in report["method"]
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    rw = determine_reader_writer_from_dataset_json(json.loads((fake["raw"] / "dataset.json").read_text()),
                                                   str(out / "suspicion" / f"case_0001{fake['ending']}"))()
    suspicion, props = rw.read_seg(str(out / "suspicion" / f"case_0001{fake['ending']}"))
    assert int(suspicion.sum()) == 16 * (1 if dim == 2 else 4) and suspicion[0][..., 12:, 12:].all()
    # the added object: p(c1) = 0.02 / (0.99 + 0.02 [+ 0.02 for c2]) ≈ 0.02, so 98 % likely wrong
    graded = rw.read_seg(str(out / "error_percent" / f"case_0001{fake['ending']}"))[0][0]
    assert (graded[..., 12:, 12:] == 98).all() and graded.max() == 98
    corrected = rw.read_seg(str(out / "corrected" / f"case_0001{fake['ending']}"))[0][0]
    assert (corrected == fake["truths"]["case_0001"]).all()                  # the object removed again
    if dim == 3:
        assert props["spacing"] == pytest.approx([2.0, 0.5, 0.5])          # the label's geometry, not a default
    assert (out / "worst.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "6 of 6 training cases scored out-of-sample" in printed and "1 of 6 scored cases have suspected" in printed


def test_fewer_folds_say_which_cases_are_not_scored(nnunet_env, capsys):
    fake_audit(nnunet_env)
    out = nnunet_env / "audit"
    assert main(["audit", "-d", "960", "-c", "2d", "-tr", TRAINER, "-f", "1", "--out", str(out), "--top", "0"]) == 0
    report = json.loads((out / "audit.json").read_text())
    assert report["not_scored"] == ["case_0000", "case_0001", "case_0002"] and report["scored_out_of_sample"] == 3
    assert "not scored (in the training set of every audited fold" in capsys.readouterr().out
    assert not (out / "worst.png").exists()


def test_write_dataset_drops_the_worst_and_records_provenance(nnunet_env, capsys):
    fake = fake_audit(nnunet_env)
    out = nnunet_env / "audit"
    assert main(["audit", "-d", "960", "-c", "2d", "-tr", TRAINER, "--out", str(out), "--top", "0",
                 "--write-dataset", "961", "--drop", "0.2"]) == 0
    new = nnunet_env / "nnUNet_raw" / "Dataset961_FakeAudited"
    dj = json.loads((new / "dataset.json").read_text())
    assert dj["numTraining"] == 5 and dj["labels"] == {"background": 0, "c1": 1} and dj["file_ending"] == ".png"
    record = dj["audit"]
    assert record["dropped"] == ["case_0001"] and record["drop_fraction"] == 0.2   # round(0.2 × 6) = 1 case
    assert record["source_dataset"] == "Dataset960_Fake" and record["trainer"] == TRAINER
    assert record["folds"] == [0, 1] and record["relabel"] is False and record["relabelled_pixels"] == {}
    assert sorted(p.name for p in (new / "labelsTr").iterdir()) == [f"{c}.png" for c in fake["cases"]
                                                                    if c != "case_0001"]
    assert len(list((new / "imagesTr").iterdir())) == 5 and (new / "labelsTs" / "t_0000.png").is_file()
    assert not [p for p in new.parent.iterdir() if ".tmp" in p.name]     # renamed into place
    assert "wrote " in capsys.readouterr().out
    # the id is now taken: one line, nothing replaced
    assert main(["audit", "-d", "960", "-c", "2d", "-tr", TRAINER, "--out", str(out), "--top", "0",
                 "--write-dataset", "961", "--relabel"]) == 2
    err = capsys.readouterr().err
    assert "--write-dataset 961: the id is taken" in err and err.count("\n") == 1


def test_write_dataset_relabels_suspected_pixels(nnunet_env):
    fake = fake_audit(nnunet_env)
    assert main(["audit", "-d", "960", "-c", "2d", "-tr", TRAINER, "--out", str(nnunet_env / "a"), "--top", "0",
                 "--write-dataset", "962", "--relabel"]) == 0
    new = nnunet_env / "nnUNet_raw" / "Dataset962_FakeAudited"
    record = json.loads((new / "dataset.json").read_text())["audit"]
    assert record["relabelled_pixels"] == {"case_0001": 16} and record["dropped"] == []
    relabelled = np.asarray(Image.open(new / "labelsTr" / "case_0001.png"))
    assert (relabelled == fake["truths"]["case_0001"]).all()
    untouched = np.asarray(Image.open(new / "labelsTr" / "case_0002.png"))
    assert (untouched == np.asarray(Image.open(fake["raw"] / "labelsTr" / "case_0002.png"))).all()


def test_write_dataset_is_atomic(tmp_path: Path):
    """A failure half-way leaves neither the dataset nor its temporary folder."""
    source = tmp_path / "Dataset001_S"
    (source / "imagesTr").mkdir(parents=True)
    (source / "labelsTr").mkdir()
    for c in ("a", "b"):
        _write_png(source / "imagesTr" / f"{c}_0000.png", np.zeros((4, 4)))
        _write_png(source / "labelsTr" / f"{c}.png", np.zeros((4, 4)))
    (source / "dataset.json").write_text(json.dumps({"channel_names": {"0": "x"}, "labels": {"background": 0, "y": 1},
                                                     "numTraining": 2, "file_ending": ".png"}))
    ranked = [{"case": "a", "suspected_pixels": 3}, {"case": "b", "suspected_pixels": 0}]
    target = tmp_path / "Dataset002_SAudited"
    with pytest.raises(UserError, match="not found: run the audit again"):
        audit.write_dataset(source, target, ranked, tmp_path / "no_corrected", None, True, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset001_S"]
    with pytest.raises(UserError, match="between 0 and 1"):
        audit.write_dataset(source, target, ranked, None, 1.5, False, {})
    with pytest.raises(UserError, match="leaves no training case"):
        audit.write_dataset(source, target, ranked, None, 0.99, False, {})


# ---------------------------------------------------------------- bad input: one line each
def _one_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_bad_input_is_one_line_naming_the_fix(nnunet_env, capsys):
    fake = fake_audit(nnunet_env)
    base = ["audit", "-d", "960", "-c", "2d"]
    err = _one_line(capsys, base + ["-tr", "nnUNetTrainerNope"])
    assert "no trained model" in err and f"trained for Dataset960_Fake: {TRAINER}__nnUNetPlans__2d" in err
    assert "nnUNetv2_train 960 2d FOLD -tr nnUNetTrainerNope --npz" in err
    err = _one_line(capsys, base + ["-tr", TRAINER, "-f", "0", "3"])
    assert "fold 3 of" in err and "is not trained" in err and f"nnUNetv2_train 960 2d 3 -tr {TRAINER} --npz" in err
    assert "fold 'all'" in _one_line(capsys, base + ["-tr", TRAINER, "-f", "all"])
    (fake["model"] / "fold_1" / "validation" / "case_0004.npz").unlink()
    err = _one_line(capsys, base + ["-tr", TRAINER])
    assert "fold 1: no validation probabilities" in err and "no checkpoint_final.pth to predict them" in err
    assert f"nnUNetv2_train 960 2d 1 -tr {TRAINER} --npz" in err
    assert "--write-dataset needs --drop" in _one_line(capsys, base + ["-tr", TRAINER, "--write-dataset", "5"])
    assert "add --write-dataset" in _one_line(capsys, base + ["-tr", TRAINER, "--relabel"])
    (nnunet_env / "nnUNet_preprocessed" / "Dataset960_Fake" / "splits_final.json").unlink()
    assert "splits_final.json not found" in _one_line(capsys, base + ["-tr", TRAINER])


def test_a_missing_probability_file_is_predicted_when_a_checkpoint_exists(nnunet_env, monkeypatch):
    """The prediction is nnUNetv2_predict --save_probabilities on that fold's validation images only."""
    fake = fake_audit(nnunet_env)
    npz = fake["model"] / "fold_1" / "validation" / "case_0004.npz"
    kept = npz.read_bytes()
    npz.unlink()
    (fake["model"] / "fold_1" / "checkpoint_final.pth").write_bytes(b"")
    calls = []

    def fake_predict(cmd, env, log_file=None, what=""):
        calls.append(cmd)
        inputs, out = Path(cmd[cmd.index("-i") + 1]), Path(cmd[cmd.index("-o") + 1])
        assert sorted(p.name for p in inputs.iterdir()) == ["case_0004_0000.png"]
        out.mkdir(parents=True, exist_ok=True)
        (out / "case_0004.npz").write_bytes(kept)

    monkeypatch.setattr(audit, "run_command", fake_predict)
    out = nnunet_env / "audit"
    argv = ["audit", "-d", "960", "-c", "2d", "-tr", TRAINER, "--out", str(out), "--top", "0", "-device", "cpu"]
    assert main(argv) == 0
    assert len(calls) == 1 and "--save_probabilities" in calls[0] and calls[0][calls[0].index("-f") + 1] == "1"
    report = json.loads((out / "audit.json").read_text())
    assert {c["case"]: c["source"] for c in report["cases"]}["case_0004"] == "predicted"
    assert main(argv) == 0 and len(calls) == 1          # kept: not predicted again
    assert not (out / "predictions" / ".input_fold_1").exists()


# ---------------------------------------------------------------- end to end through nnU-Net
@pytest.fixture(scope="module")
def tiny_preprocessed(nnunet_root: Path) -> dict:
    """A synthetic 32² dataset (10 training cases) preprocessed with helpers' tiny 2D plans (no nnU-Net planning:
    its planner alone takes minutes on a busy CPU)."""
    import shutil

    from helpers import tiny_2d_plans
    env = clean_env(nnunet_root)
    run(["nnunet_gsd", "convert", "synthetic", "--id", "918", "--num-train", "10", "--num-test", "2", "--size", "32",
         "--seed", "4"], env)
    raw = next((nnunet_root / "nnUNet_raw").glob("Dataset918_*"))
    pre = nnunet_root / "nnUNet_preprocessed" / raw.name
    pre.mkdir(parents=True)
    shutil.copy(raw / "dataset.json", pre / "dataset.json")      # what nnU-Net's planner would copy
    # as nnU-Net plans PNG data: (1, H, W) volumes with a dummy first axis
    plans = dict(tiny_2d_plans(raw.name), transpose_forward=[0, 1, 2], transpose_backward=[0, 1, 2],
                 original_median_spacing_after_transp=[999.0, 1.0, 1.0], original_median_shape_after_transp=[1, 32, 32],
                 foreground_intensity_properties_per_channel={"0": {
                     "max": 255.0, "mean": 128.0, "median": 128.0, "min": 0.0, "percentile_00_5": 0.0,
                     "percentile_99_5": 255.0, "std": 50.0}})
    arch = plans["configurations"]["2d"]["architecture"]["arch_kwargs"]   # 3 stages: stock deep supervision needs 2
    arch.update(n_stages=3, features_per_stage=[4, 8, 16], kernel_sizes=[[3, 3]] * 3, strides=[[1, 1], [2, 2], [2, 2]],
                n_conv_per_stage=[1, 1, 1], n_conv_per_stage_decoder=[1, 1])
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans))
    (pre / "dataset_fingerprint.json").write_text("{}")   # the trainer only copies it into the model folder
    run(["nnUNetv2_preprocess", "-d", "918", "-c", "2d", "-np", "1"], env)
    return {"id": "918", "raw": raw, "name": raw.name, "preprocessed": pre}


@pytest.mark.e2e
def test_audit_after_two_folds_of_nnunet_training(tiny_preprocessed, nnunet_root: Path):
    """Two folds × 1 epoch of 2 iterations: fold 0 validates with --npz, fold 1 without (the audit predicts it)."""
    env = clean_env(nnunet_root, nnUNet_n_proc_DA="0", nnUNet_GSD_NUM_EPOCHS="1", nnUNet_GSD_NUM_ITERATIONS="2",
                    nnUNet_GSD_NUM_VAL_ITERATIONS="1")
    did = tiny_preprocessed["id"]
    run(["nnUNetv2_train", did, "2d", "0", "-tr", TRAINER, "-device", "cpu", "--npz"], env)
    proc = run_failing(["nnunet_gsd", "audit", "-d", did, "-c", "2d", "-tr", TRAINER, "-f", "0", "1"], env)
    assert "fold 1 of" in proc.stderr and "is not trained" in proc.stderr and "Traceback" not in proc.stderr
    run(["nnUNetv2_train", did, "2d", "1", "-tr", TRAINER, "-device", "cpu"], env)
    model = nnunet_root / "nnUNet_results" / tiny_preprocessed["name"] / f"{TRAINER}__nnUNetPlans__2d"
    assert list((model / "fold_0" / "validation").glob("*.npz"))
    assert not list((model / "fold_1" / "validation").glob("*.npz"))
    output = run(["nnunet_gsd", "audit", "-d", did, "-c", "2d", "-tr", TRAINER, "-f", "0", "1", "-device", "cpu",
                  "--disable_tta", "-np", "1", "--top", "4", "--write-dataset", "917", "--drop", "0.25"], env)
    splits = json.loads((tiny_preprocessed["preprocessed"] / "splits_final.json").read_text())
    validated = sorted(splits[0]["val"] + splits[1]["val"])
    report = json.loads((model / "audit" / "audit.json").read_text())
    assert sorted(c["case"] for c in report["cases"]) == validated
    assert report["not_scored"] == sorted(set(splits[0]["train"]) & set(splits[1]["train"]))
    sources = {c["case"]: (c["fold"], c["source"]) for c in report["cases"]}
    assert all(sources[c] == (0, "validation") for c in splits[0]["val"])
    assert all(sources[c] == (1, "predicted") for c in splits[1]["val"])
    assert all(0.0 <= c["score"] <= 1.0 and 0.0 <= c["suspected_fraction"] <= 1.0 for c in report["cases"])
    assert len(list((model / "audit" / "suspicion").glob("*.png"))) == len(validated)
    assert (model / "audit" / "worst.png").stat().st_size > 0 and "audit: scoring" in output
    new = next((nnunet_root / "nnUNet_raw").glob("Dataset917_*"))
    record = json.loads((new / "dataset.json").read_text())["audit"]
    assert record["dropped"] == [c["case"] for c in report["cases"][:round(0.25 * len(validated))]]
    assert len(list((new / "labelsTr").iterdir())) == 10 - len(record["dropped"])
    # a valid nnU-Net raw dataset (nnU-Net's own integrity check)
    run(["nnUNetv2_extract_fingerprint", "-d", "917", "-np", "1", "--verify_dataset_integrity"],
        clean_env(nnunet_root))


# ---------------------------------------------------------------- bench/audit.py's corruptions and metrics
def bench_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_audit", Path(__file__).parents[2] / "bench" / "audit.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_metrics_on_the_fake_audit(nnunet_env):
    """case_0001's added object is the only error: found first, and exactly its pixels suspected."""
    fake = fake_audit(nnunet_env)
    out = nnunet_env / "audit"
    assert main(["audit", "-d", "960", "-c", "2d", "-tr", TRAINER, "--out", str(out), "--top", "0"]) == 0
    (fake["raw"] / "labelsTr_clean").mkdir()
    for case, truth in fake["truths"].items():
        _write_png(fake["raw"] / "labelsTr_clean" / f"{case}.png", truth)
    m = bench_module().audit_metrics(json.loads((out / "audit.json").read_text()),
                                     {"case_0001": {"kind": "added_object"}}, fake["raw"], out)
    assert m["scored_cases"] == 6 and m["corrupted_scored"] == 1
    assert m["case_auroc"] == 1.0 and m["precision_at_k"] == 1.0
    assert m["pixel_auroc"] == 1.0 and m["pixel_precision"] == 1.0 and m["pixel_recall"] == 1.0
    assert m["pixel_auroc_graded"] == 1.0
    assert m["per_kind"] == {"added_object": {"cases": 1, "found_in_top_k": 1.0}}


def test_bench_corruptions_change_the_labels_as_named():
    bench = bench_module()
    label = np.zeros((64, 64), np.uint8)
    label[10:30, 10:30] = 1          # the largest object
    label[40:48, 40:48] = 1
    rng = np.random.default_rng(0)
    deleted = bench.corrupt(label, "deleted_object", rng, 64)
    assert deleted[10:30, 10:30].sum() == 0 and (deleted[40:48, 40:48] == 1).all()
    added = bench.corrupt(label, "added_object", rng, 64)
    assert (added[label == 1] == 1).all() and added.sum() > label.sum()
    assert bench.corrupt(label, "heavy_S_R", rng, 64).sum() < label.sum()     # under-annotation
    assert bench.corrupt(label, "heavy_S_E", rng, 64).sum() > label.sum()     # over-annotation
