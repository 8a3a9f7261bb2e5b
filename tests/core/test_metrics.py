import math

import numpy as np
import pytest
import torch

from h2crop_core.data.synth import generate_taxonomy
from h2crop_core.metrics import HierarchicalConfusion, class_scores, level_metrics, summarise

NAN = float("nan")


def test_hand_computed_level_with_every_absent_class_case():
    # classes: 0 background, 1 present & partly right, 2 absent & never predicted,
    # 3 absent from labels but predicted, 4 present but never predicted
    label = np.array([0, 0, 1, 1, 1, 4, 4, 255, 255])
    pred = np.array([0, 1, 1, 1, 3, 0, 1, 3, 2])  # predictions on unlabelled pixels are ignored
    cm = np.zeros((5, 5), np.int64)
    for y, p in zip(label, pred):
        if y != 255:
            cm[y, p] += 1
    scores = class_scores(cm)
    # class 0: TP 1, FP 1 (from a 4), FN 1 -> IoU 1/3, P 1/2, R 1/2, F1 1/2
    # class 1: TP 2, FP 2, FN 1 -> IoU 2/5, P 1/2, R 2/3, F1 4/7
    np.testing.assert_allclose(scores.iou[[0, 1]], [1 / 3, 2 / 5])
    np.testing.assert_allclose(scores.f1[[0, 1]], [1 / 2, 4 / 7])
    assert all(math.isnan(v) for v in (scores.iou[2], scores.precision[2], scores.recall[2], scores.f1[2]))
    assert scores.iou[3] == 0 and scores.precision[3] == 0 and math.isnan(scores.recall[3]) and math.isnan(scores.f1[3])
    assert scores.iou[4] == 0 and math.isnan(scores.precision[4]) and scores.recall[4] == 0 and scores.f1[4] == 0
    metrics = level_metrics(cm)
    assert metrics["oa"] == pytest.approx(3 / 7)
    assert metrics["miou"] == pytest.approx((1 / 3 + 2 / 5 + 0 + 0) / 4)  # class 2 skipped, 3 and 4 count 0
    assert metrics["mf1"] == pytest.approx((1 / 2 + 4 / 7 + 0) / 3)  # classes 2 and 3 skipped
    assert metrics["n_pixels"] == 7 and [r["support"] for r in metrics["per_class"]] == [2, 3, 0, 0, 2]
    # the research code's F1 skips class 4 (0/0 precision) as well
    assert level_metrics(cm, mmseg_f1=True)["mf1"] == pytest.approx((1 / 2 + 4 / 7) / 2)
    # stricter variant: background left out of OA and the means
    strict = level_metrics(cm, ignore_background=True)
    assert strict["oa"] == pytest.approx(2 / 5)
    assert strict["miou"] == pytest.approx((2 / 5 + 0 + 0) / 3)
    assert strict["mf1"] == pytest.approx((4 / 7 + 0) / 2)


def test_nothing_labelled_gives_nan_not_zero():
    metrics = level_metrics(np.zeros((3, 3), np.int64))
    assert all(math.isnan(metrics[key]) for key in ("oa", "miou", "mf1"))
    assert math.isnan(summarise({"level1": metrics, "level2": metrics})["mf1"])


def _stack(rng, shape, taxonomy, unlabelled=0.1):
    leaves = rng.integers(0, taxonomy.num_classes[3], size=shape)
    stack = np.moveaxis(taxonomy.paths[leaves], -1, -3).astype(np.uint8)
    if unlabelled:
        stack[..., rng.random(shape[-2:]) < unlabelled] = 255
    return stack


def numpy_benchmark_metrics(pred: np.ndarray, label: np.ndarray, num_classes: int) -> dict:
    """The benchmark formulas written directly on pixels (mmseg's intersect-and-union), independently of
    the confusion matrix code."""
    keep = label != 255
    pred, label = pred[keep].astype(np.int64), label[keep].astype(np.int64)
    intersect = np.histogram(label[pred == label], bins=num_classes, range=(0, num_classes))[0].astype(np.float64)
    area_pred = np.histogram(pred, bins=num_classes, range=(0, num_classes))[0].astype(np.float64)
    area_label = np.histogram(label, bins=num_classes, range=(0, num_classes))[0].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = intersect / (area_pred + area_label - intersect)
        precision = intersect / area_pred
        recall = intersect / area_label
        f1 = (1 + 1**2) * (precision * recall) / ((1**2 * precision) + recall)
    f1 = np.where((area_label > 0) & (intersect == 0), 0.0, f1)
    return {
        "oa": intersect.sum() / area_label.sum(),
        "miou": np.nanmean(iou),
        "mf1": np.nanmean(f1),
        "iou": iou,
        "f1": f1,
    }


def test_random_predictions_match_an_independent_numpy_implementation():
    taxonomy = generate_taxonomy(seed=2)
    rng = np.random.default_rng(0)
    label = _stack(rng, (3, 40, 40), taxonomy)
    prediction = rng.integers(0, 255, size=label.shape) % np.array(taxonomy.num_classes)[None, :, None, None]
    prediction[:, :, :20] = np.where(label[:, :, :20] == 255, 0, label[:, :, :20])  # half the tile right
    confusion = HierarchicalConfusion(taxonomy.num_classes)
    confusion.update(torch.as_tensor(prediction), torch.as_tensor(label))
    result = confusion.compute()["all"]
    for k, n in enumerate(taxonomy.num_classes):
        expected = numpy_benchmark_metrics(prediction[:, k], label[:, k], n)
        got = result["levels"][f"level{k + 1}"]
        for key in ("oa", "miou", "mf1"):
            assert abs(got[key] - expected[key]) < 1e-9, (k, key)
        np.testing.assert_allclose([c["iou"] for c in got["per_class"]], expected["iou"], atol=1e-12, equal_nan=True)
    assert result["mean"]["mf1"] == pytest.approx(
        np.mean([result["levels"][f"level{k}"]["mf1"] for k in range(1, 5)]), abs=1e-12
    )


def test_merging_batches_equals_one_pass_and_state_round_trips():
    taxonomy = generate_taxonomy(seed=2)
    rng = np.random.default_rng(1)
    label, prior = _stack(rng, (6, 24, 24), taxonomy), _stack(rng, (6, 24, 24), taxonomy, unlabelled=0)
    prediction = _stack(rng, (6, 24, 24), taxonomy, unlabelled=0)
    one = HierarchicalConfusion(taxonomy.num_classes, taxonomy)
    one.update(torch.as_tensor(prediction), torch.as_tensor(label), torch.as_tensor(prior))
    parts = []
    for i in range(6):
        part = HierarchicalConfusion(taxonomy.num_classes, taxonomy)
        part.update(prediction[i], label[i], prior[i])  # (4, H, W) single samples too
        parts.append(HierarchicalConfusion.from_state(part.state(), taxonomy))
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    for area in ("all", "changed", "unchanged"):
        for a, b in zip(one.matrices[area], merged.matrices[area]):
            assert torch.equal(a, b)
    assert merged.samples == 6 and merged.consistent_pixels == one.consistent_pixels


def test_changed_and_unchanged_areas_split_the_labelled_pixels():
    taxonomy = generate_taxonomy(seed=2)
    rng = np.random.default_rng(2)
    label = _stack(rng, (2, 16, 16), taxonomy)
    prior = label.copy()
    prior[..., :8] = _stack(rng, (2, 16, 8), taxonomy, unlabelled=0)  # last year differs on the left half
    prediction = np.where(label == 255, 0, label)
    prediction[..., :8] = 0  # ... where the model gets it wrong
    confusion = HierarchicalConfusion(taxonomy.num_classes, taxonomy)
    confusion.update(prediction, label, prior)
    for k in range(4):
        total = confusion.matrices["all"][k].sum()
        assert confusion.matrices["changed"][k].sum() + confusion.matrices["unchanged"][k].sum() == total
    result = confusion.compute()
    assert result["unchanged"]["levels"]["level4"]["oa"] > result["changed"]["levels"]["level4"]["oa"]
    changed = (label[:, 3] != prior[:, 3]) & (label[:, 3] != 255)
    assert int(confusion.matrices["changed"][3].sum()) == int(changed.sum())


def test_consistency_of_predictions():
    taxonomy = generate_taxonomy(seed=2)
    rng = np.random.default_rng(3)
    prediction = _stack(rng, (2, 10, 10), taxonomy, unlabelled=0)
    confusion = HierarchicalConfusion(taxonomy.num_classes, taxonomy)
    confusion.update(prediction, prediction)
    assert confusion.compute()["consistency"] == 1.0
    broken = prediction.copy()
    broken[0, 0] = (broken[0, 0].astype(int) % 6) + 1  # level 1 shifted on one sample: most paths break
    other = HierarchicalConfusion(taxonomy.num_classes, taxonomy)
    other.update(broken, prediction)
    expected = taxonomy.valid_path_mask(broken).mean()
    assert other.compute()["consistency"] == pytest.approx(expected) and expected < 0.75


def test_out_of_range_inputs_are_clear_errors():
    confusion = HierarchicalConfusion((3, 4, 5, 6))
    label = np.zeros((1, 4, 2, 2), np.uint8)
    with pytest.raises(ValueError, match="level2 predictions must be ids 0..3; found \\[9\\]"):
        bad = label.copy()
        bad[0, 1, 0, 0] = 9
        confusion.update(bad, label)
    with pytest.raises(ValueError, match="shape"):
        confusion.update(label[:, :, :1], label)
    with pytest.raises(ValueError, match="level1 labels must be ids 0..2 or 255"):
        bad = label.copy()
        bad[0, 0, 0, 0] = 7
        confusion.update(label, bad)
