"""rnnkit.metrics against scikit-learn (classification), hand-counted conlleval cases
(entities) and direct numpy formulas (regression)."""

import numpy as np
import pytest

from rnnkit.metrics import (
    accuracy,
    bio_entities,
    classification_report,
    confusion_matrix,
    entity_scores,
    format_classification_report,
    mae,
    mase,
    masked_token_accuracy,
    precision_recall_f1,
    rmse,
)

sk = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed,k", [(0, 2), (1, 3), (2, 5)])
def test_classification_matches_sklearn(seed, k):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, k, 200))
    assert accuracy(y, p) == pytest.approx(sk.accuracy_score(y, p))
    np.testing.assert_array_equal(confusion_matrix(y, p, k),
                                  sk.confusion_matrix(y, p, labels=range(k)))
    prf = precision_recall_f1(y, p, k)
    P, R, F, S = sk.precision_recall_fscore_support(y, p, labels=range(k), zero_division=0)
    np.testing.assert_allclose(prf["precision"], P)
    np.testing.assert_allclose(prf["recall"], R)
    np.testing.assert_allclose(prf["f1"], F)
    np.testing.assert_array_equal(prf["support"], S)


def test_report_with_absent_class_and_names():
    rep = classification_report([0, 0, 1, 1], [0, 1, 1, 1], ["ham", "spam", "other"])
    assert rep["per_class"]["other"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                         "support": 0}
    assert rep["per_class"]["spam"]["precision"] == pytest.approx(2 / 3)
    assert rep["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    text = format_classification_report(rep)
    assert "spam" in text and "accuracy 0.7500" in text


def test_bio_entities_conlleval_rules():
    # IOB2
    assert bio_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]
    # adjacent entities of one type split by B-
    assert bio_entities(["B-PER", "B-PER", "I-PER"]) == [("PER", 0, 1), ("PER", 1, 3)]
    # IOB1 (original CoNLL-2003): I- after O starts an entity
    assert bio_entities(["O", "I-ORG", "I-ORG", "I-LOC"]) == [("ORG", 1, 3), ("LOC", 3, 4)]
    # BIOES
    assert bio_entities(["S-LOC", "B-PER", "E-PER", "I-PER"]) == [
        ("LOC", 0, 1), ("PER", 1, 3), ("PER", 3, 4)]
    assert bio_entities(["O", "O"]) == []


def test_entity_scores_hand_counted():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "B-LOC"]]
    s = entity_scores(gold, pred)
    # gold: PER(0,2) LOC(3,4) ORG(0,1); pred: PER(0,1) LOC(3,4) ORG(0,1) LOC(1,2) -> 2 correct
    assert s["precision"] == pytest.approx(2 / 4)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert s["per_type"]["PER"]["f1"] == 0.0
    assert s["per_type"]["LOC"]["precision"] == 0.5 and s["per_type"]["LOC"]["recall"] == 1.0
    with pytest.raises(ValueError, match="sentence 0"):
        entity_scores([["O"]], [["O", "O"]])


def test_masked_token_accuracy():
    y = np.array([[1, 2, 0], [3, 0, 0]])
    p = np.array([[1, 1, 5], [3, 4, 4]])
    assert masked_token_accuracy(y, p, y != 0) == pytest.approx(2 / 3)


def test_regression_metrics():
    y = np.array([1.0, 2.0, 4.0])
    f = np.array([1.5, 2.0, 2.0])
    assert mae(y, f) == pytest.approx((0.5 + 0 + 2) / 3)
    assert rmse(y, f) == pytest.approx(np.sqrt((0.25 + 0 + 4) / 3))
    z = np.array([0.0, 1.0, 3.0, 6.0])  # naive in-sample errors 1, 2, 3 -> scale 2
    assert mase(y, f, z) == pytest.approx(mae(y, f) / 2)
    assert mase(y, f, z, season=2) == pytest.approx(mae(y, f) / 4)  # |3-0|, |6-1| -> 4
    with pytest.raises(ValueError, match="constant"):
        mase(y, f, np.ones(5))
