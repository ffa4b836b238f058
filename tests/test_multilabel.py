"""Multi-label text classification (``train text --label-sep`` / several ``--label-col``):
label sets, one sigmoid per label, the per-label report, and the traps around it.

Oracle for the report: counts computed by hand on a fixed prediction."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.errors import UserError
from rnnkit.tasks.classify import TextClassifier, best_thresholds
from rnnkit.tasks.textfile import (
    LabelledTexts,
    encode_label_sets,
    evaluate_label_sets,
    label_sets,
    multi_label_names,
)

FAST = ["--epochs", "12", "--units", "16", "--embed-dim", "16", "--num-words", "100",
        "--maxlen", "8", "--lr", "1e-2", "--patience", "20", "--quiet"]


def test_label_sets_are_canonical():
    raw = ["b|a", "a | b", "none", "", "c|none|c"]
    assert label_sets(raw) == ["a|b", "a|b", "", "", "c"]
    assert label_sets(["x;y"], sep=";", no_label="-") == ["x|y"]
    assert multi_label_names(["a|b", "", "c"]) == ["a", "b", "c"]
    y = encode_label_sets(["a|b", "", "c"], ["a", "b", "c"])
    np.testing.assert_array_equal(y, [[1, 1, 0], [0, 0, 0], [0, 0, 1]])
    with pytest.raises(UserError, match="'d' is not one the model was trained on"):
        encode_label_sets(["d"], ["a", "b"])


class _Fixed:
    """A stand-in classifier with fixed probabilities (the report's oracle)."""
    labels = ["a", "b"]

    def predict_proba(self, texts, batch_size=256):
        return np.array([[0.9, 0.2], [0.6, 0.7], [0.1, 0.4], [0.3, 0.8]])


def test_report_counts_by_hand():
    data = LabelledTexts(["1", "2", "3", "4"], ["a", "a|b", "", "a"], "x")
    r = evaluate_label_sets(_Fixed(), data)
    # a: predicted rows 1,2; true rows 1,2,4 -> tp 2, fp 0, fn 1
    assert r["per_label"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3,
                                                 "f1": 0.8, "support": 3})
    # b: predicted rows 2,4; true row 2 -> tp 1, fp 1, fn 0
    assert r["per_label"]["b"]["f1"] == pytest.approx(2 / 3)
    assert r["macro"]["f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert r["micro"]["f1"] == pytest.approx(2 * 0.75 * 0.75 / 1.5)  # tp 3, fp 1, fn 1
    assert r["subset_accuracy"] == pytest.approx(0.75)  # rows 1-3 exactly right
    assert r["hamming_accuracy"] == pytest.approx(6 / 8)
    assert r["baseline_majority_set"] == "a"


def test_best_thresholds_by_hand():
    probs = np.array([[0.30, 0.9], [0.25, 0.8], [0.10, 0.7], [0.05, 0.2]])
    y = np.array([[1, 1], [1, 1], [0, 0], [0, 0]])
    # column 0: positives at 0.25-0.30, negatives at <= 0.10: every t in (0.10, 0.25] is
    # perfect, 0.25 is the one nearest 0.5; column 1: positives at 0.8-0.9, negatives at
    # <= 0.7: 0.75 and 0.80 are perfect, 0.75 is nearer 0.5
    assert best_thresholds(probs, y) == [0.25, 0.75]
    assert best_thresholds(probs, np.zeros((4, 2))) == [0.5, 0.5]  # no positives: 0.5


def _file(tmp_path, columns: bool):
    """Words decide the labels: 'red' -> colour, 'cat' -> animal (both, one or none)."""
    rng = random.Random(0)
    filler = ["the", "a", "of", "big", "small", "one", "two", "old"]
    rows = []
    for _ in range(400):
        c, a = rng.random() < 0.5, rng.random() < 0.5
        words = rng.sample(filler, 4) + (["red"] if c else []) + (["cat"] if a else [])
        rng.shuffle(words)
        text = " ".join(words)
        if columns:
            rows.append(f"{text},{'colour' if c else 'none'},{'animal' if a else 'none'}")
        else:
            labs = [x for x, on in (("colour", c), ("animal", a)) if on]
            rows.append(f"{text},{'|'.join(labs) or 'none'}")
    path = tmp_path / "ml.csv"
    head = "text,c,a" if columns else "text,tags"
    path.write_text(head + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("columns", [False, True])
def test_train_evaluate_predict_multi_label(tmp_path, capsys, columns):
    path = _file(tmp_path, columns)
    out = tmp_path / "m"
    cols = ["--label-col", "c,a"] if columns else ["--label-col", "tags", "--label-sep", "|"]
    assert main(["train", "text", "--file", str(path), "--text-col", "text", *cols, *FAST,
                 "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["labels"] == ["animal", "colour"]
    test = res["test"]
    assert test["multi_label"] and test["macro"]["f1"] > 0.9, test
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["multi_label"] is True
    assert main(["evaluate", str(out), "--file", str(path), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["macro"] == test["macro"]  # the same held-out rows again
    clf = TextClassifier.load(out)
    got = clf.predict(["red cat the one", "old two big small", "the red one a"])
    assert [g["labels"] for g in got] == [["animal", "colour"], [], ["colour"]]
    # thresholds chosen on the validation part, saved, and used by evaluate's report
    assert cfg["thresholds"] == clf.thresholds and len(clf.thresholds) == 2
    assert all(0 < c < 1 for c in clf.thresholds)
    assert list(ev["thresholds"].values()) == clf.thresholds


def test_multi_label_traps(tmp_path, capsys):
    path = _file(tmp_path, False)
    base = ["train", "text", "--file", str(path), "--text-col", "text", "--label-col", "tags",
            "--label-sep", "|", "--quiet", "--out", str(tmp_path / "x")]
    assert main([*base, "--stream"]) == 2
    assert "multi-label data needs a CSV/TSV file read whole" in capsys.readouterr().err
    one = tmp_path / "one.csv"
    one.write_text("text,tags\n" + "".join(f"w{i} red,colour\nw{i} dog,none\n"
                                            for i in range(30)))
    assert main(["train", "text", "--file", str(one), "--text-col", "text", "--label-col",
                 "tags", "--label-sep", "|", "--quiet", "--out", str(tmp_path / "y")]) == 2
    assert "at least 2 labels besides 'none'" in capsys.readouterr().err


def test_tampered_multi_label_flag_is_refused(tmp_path, capsys):
    path = _file(tmp_path, False)
    out = tmp_path / "m"
    assert main(["train", "text", "--file", str(path), "--text-col", "text", "--label-col",
                 "tags", "--label-sep", "|", "--epochs", "2", "--quiet", "--out", str(out)]) == 0
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["multi_label"] = "yes"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="multi_label must be true or false"):
        TextClassifier.load(out)
    cfg["multi_label"] = True
    for bad in ([0.5], [0.5, 1.5], [0.5, "x"], "0.5"):
        cfg["thresholds"] = bad
        cfg_path.write_text(json.dumps(cfg))
        with pytest.raises(UserError, match="thresholds must be 2 numbers"):
            TextClassifier.load(out)
    cfg["thresholds"] = [0.3, 0.6]
    cfg_path.write_text(json.dumps(cfg))
    assert TextClassifier.load(out).thresholds == [0.3, 0.6]
    cfg["multi_label"] = False  # 2 labels, 2 outputs: not a binary classifier's head
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="need an output of 1 unit"):
        TextClassifier.load(out)
