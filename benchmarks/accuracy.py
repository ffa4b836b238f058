"""Accuracy suite: rnnkit's defaults on real data against baselines and published figures.

    make accuracy                       # every row whose data is present
    python benchmarks/accuracy.py --only series --json out.json

Each row runs the CLI as a user would (the task's default flags, the data's own split,
``--seed 42``), reads its ``--json`` result and prints it beside the baseline computed on
the same split and the target of the issue that set it. Data comes from ``--data-dir``,
``RNNKIT_DATA_DIR`` or ``../shared/data``; a row whose files are absent is skipped with the
reason. The figures in docs/results.md are this script's output.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("RNNKIT_DATA_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def _train(argv: list[str]) -> tuple[dict[str, Any], float]:
    """``rnnkit train ... --json`` into a throw-away model directory: its result and the
    wall-clock seconds it took."""
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = _run([*argv, "--out", str(Path(d) / "m")])
        return res, time.perf_counter() - t0


def _run(argv: list[str]) -> dict[str, Any]:
    """``rnnkit argv --json`` in-process; its last stdout line as JSON."""
    from rnnkit.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"rnnkit {' '.join(argv)} exited {rc}")
    return json.loads(buf.getvalue().strip().splitlines()[-1])


def series_row(data: Path, name: str, target: str, check: Callable[[dict], bool]
               ) -> dict[str, Any]:
    tr, te = data / "series" / f"{name}_TRAIN.ts", data / "series" / f"{name}_TEST.ts"
    if not (tr.is_file() and te.is_file()):
        return {"row": f"series {name}", "skipped": f"{tr} or {te} not found"}
    res, secs = _train(["train", "series", "--train", str(tr), "--test", str(te),
                        "--seed", "42", "--quiet", "--json"])
    t = res["test"]
    return {"row": f"series {name}", "split": "archive TRAIN/TEST", "n_test": t["n"],
            "accuracy": round(t["accuracy"], 4), "macro_f1": round(t["macro"]["f1"], 4),
            "baseline_1nn": round(t["baseline_1nn_accuracy"], 4), "target": target,
            "met": bool(check(t)), "seconds": round(secs, 1)}


def forecast_row(data: Path, name: str, flags: list[str]) -> dict[str, Any]:
    """Walk-forward MASE of the model against seasonal naive (target: 10% below)."""
    f = data / "series" / f"{name}.csv"
    if not f.is_file():
        return {"row": f"forecast {name}", "skipped": f"{f} not found"}
    res, secs = _train(["train", "forecast", "--file", str(f), *flags, "--seed", "42",
                        "--quiet", "--json"])
    m = res["metrics"]
    model, snaive = m["model"]["mase"], m["seasonal_naive"]["mase"]
    return {"row": f"forecast {name}", "split": "last 20% walk-forward",
            "flags": " ".join(flags), "origins": res["origins"], "mase": model,
            "mase_seasonal_naive": snaive, "mase_naive": m["naive"]["mase"],
            "mase_drift": m["drift"]["mase"], "interval_coverage": res["interval_coverage"],
            "target": "MASE <= 0.9 x seasonal naive; 80% interval covers 70-90%",
            "met": model <= 0.9 * snaive and res["interval_coverage"] is not None
            and 0.7 <= res["interval_coverage"] <= 0.9, "seconds": round(secs, 1)}


def _tfidf_f1(train: tuple[list[str], list[str]], test: tuple[list[str], list[str]],
              analyzer: str, ngrams: tuple[int, int]) -> float:
    """Macro F1 of TF-IDF + logistic regression (scikit-learn), the strong simple baseline."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    vec = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True,
                          min_df=2)
    clf = LogisticRegression(max_iter=2000, C=4.0)
    clf.fit(vec.fit_transform(train[0]), train[1])
    return float(f1_score(test[1], clf.predict(vec.transform(test[0])), average="macro"))


def korean_row(data: Path) -> dict[str, Any]:
    """korean_hate_speech: train.tsv -> dev.tsv, the ``hate`` column (3 classes)."""
    from rnnkit.tasks.textfile import read_labelled

    d = data / "korean_hate_speech"
    tr, te = d / "train.tsv", d / "dev.tsv"
    if not (tr.is_file() and te.is_file()):
        return {"row": "text korean_hate_speech", "skipped": f"{d} files not found"}
    res, secs = _train(["train", "text", "--file", str(tr), "--test-file", str(te),
                        "--text-col", "comments", "--label-col", "hate", "--lang", "ko",
                        "--seed", "42", "--quiet", "--json"])
    a = read_labelled(tr, "comments", "hate", "tsv")
    b = read_labelled(te, "comments", "hate", "tsv")
    word = _tfidf_f1((a.texts, a.labels), (b.texts, b.labels), "word", (1, 2))
    char = _tfidf_f1((a.texts, a.labels), (b.texts, b.labels), "char_wb", (1, 3))
    f1 = res["test"]["macro"]["f1"]
    from keras_peers import text_classifier_f1

    peer = text_classifier_f1((a.texts, a.labels), (b.texts, b.labels))
    return {"row": "text korean_hate_speech", "split": "train.tsv / dev.tsv",
            "metric": "macro F1", "rnnkit": round(f1, 4),
            "tfidf_word_1_2": round(word, 4), "tfidf_char_1_3": round(char, 4),
            "keras_peer": None if peer is None else round(peer, 4),
            "majority_accuracy": round(res["test"]["baseline_majority_accuracy"], 4),
            "target": "macro F1 >= best TF-IDF + 0.02", "met": f1 >= max(word, char) + 0.02,
            "seconds": round(secs, 1)}


def korean_multilabel_row(data: Path) -> dict[str, Any]:
    """korean_hate_speech as multi-label data: the ``hate`` and ``bias`` columns together
    (labels hate, offensive, gender, others; "none" is no label), train.tsv -> dev.tsv,
    beside TF-IDF char 1-3-grams + one logistic regression per label, at 0.5 and with
    per-label thresholds chosen on a held-out tenth of the training rows."""
    from rnnkit.tasks.textfile import encode_label_sets, label_sets, read_labelled

    d = data / "korean_hate_speech"
    tr, te = d / "train.tsv", d / "dev.tsv"
    name = "text korean_hate_speech multi-label (hate+bias)"
    if not (tr.is_file() and te.is_file()):
        return {"row": name, "skipped": f"{d} files not found"}
    res, secs = _train(["train", "text", "--file", str(tr), "--test-file", str(te),
                        "--text-col", "comments", "--label-col", "hate,bias", "--lang", "ko",
                        "--seed", "42", "--quiet", "--json"])
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.multiclass import OneVsRestClassifier

    a = read_labelled(tr, "comments", "hate,bias", "tsv")
    b = read_labelled(te, "comments", "hate,bias", "tsv")
    names = res["labels"]
    ya = encode_label_sets(label_sets(a.labels), names)
    yb = encode_label_sets(label_sets(b.labels), names)
    import numpy as np

    from rnnkit.tasks.classify import best_thresholds

    def ovr_f1(tune: bool) -> float:
        """TF-IDF + one logistic regression per label; with ``tune`` fitted on 90% of the
        training rows and each label's threshold chosen on the other 10%, as rnnkit does."""
        idx = np.random.default_rng(42).permutation(len(a.texts))
        fit_ix, val_ix = (idx[len(idx) // 10:], idx[:len(idx) // 10]) if tune else (idx, idx[:0])
        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True,
                              min_df=2)
        ovr = OneVsRestClassifier(LogisticRegression(max_iter=2000, C=4.0))
        ovr.fit(vec.fit_transform([a.texts[i] for i in fit_ix]), ya[fit_ix])
        cuts = np.full(len(names), 0.5)
        if tune:
            cuts = np.asarray(best_thresholds(
                ovr.predict_proba(vec.transform([a.texts[i] for i in val_ix])), ya[val_ix]))
        pred = ovr.predict_proba(vec.transform(b.texts)) >= cuts[None, :]
        return float(f1_score(yb, pred, average="macro", zero_division=0))

    tfidf, tfidf_tuned = ovr_f1(False), ovr_f1(True)
    f1 = res["test"]["macro"]["f1"]
    return {"row": name, "split": "train.tsv / dev.tsv", "metric": "macro F1 (4 labels)",
            "rnnkit": round(f1, 4), "tfidf_char_1_3": round(tfidf, 4),
            "tfidf_char_1_3_tuned": round(tfidf_tuned, 4),
            "subset_accuracy": res["test"]["subset_accuracy"],
            "majority_accuracy": res["test"]["baseline_majority_subset_accuracy"],
            "target": "reported (no target)", "met": None, "seconds": round(secs, 1)}


def tagger_row(data: Path) -> dict[str, Any]:
    """UD English GUM: train on the dev file, test on the test file (UPOS)."""
    d = data / "ud_english_gum"
    tr, te = d / "en_gum-ud-dev.conllu", d / "en_gum-ud-test.conllu"
    if not (tr.is_file() and te.is_file()):
        return {"row": "tagger ud_english_gum", "skipped": f"{d} files not found"}
    res, secs = _train(["train", "tagger", "--train", str(tr), "--test", str(te),
                        "--seed", "42", "--quiet", "--json"])
    t = res["test"]
    from keras_peers import tagger_accuracy

    from rnnkit.tasks.tagging import read_tagged

    peer = tagger_accuracy([(x.tokens, x.tags) for x in read_tagged(tr)],
                           [(x.tokens, x.tags) for x in read_tagged(te)])
    return {"row": "tagger ud_english_gum", "split": "dev -> test", "metric": "UPOS acc",
            "rnnkit": round(t["token_accuracy"], 4),
            "keras_peer": None if peer is None else round(peer, 4),
            "baseline_word_majority": round(t["baseline_word_majority_accuracy"], 4),
            "target": "UPOS >= 0.92", "met": t["token_accuracy"] >= 0.92,
            "seconds": round(secs, 1)}


def imdb_csv_row(data: Path) -> dict[str, Any]:
    """IMDB as two CSV files (the official 25,000 / 25,000 split of aclImdb_v1.tar.gz):
    ``train text`` with its defaults against ``train imdb --recipe recommended``."""
    import csv

    from rnnkit.datasets import load_imdb

    if not (data / "aclImdb_v1.tar.gz").is_file():
        return {"row": "text IMDB as CSV", "skipped": f"{data / 'aclImdb_v1.tar.gz'} not found"}
    (trx, try_), (tex, tey) = load_imdb(data, "raw", download=False)
    with tempfile.TemporaryDirectory() as d:
        files = []
        for name, xs, ys in (("train", trx, try_), ("test", tex, tey)):
            f = Path(d) / f"imdb_{name}.csv"
            with open(f, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["review", "sentiment"])
                w.writerows((x, "positive" if y else "negative") for x, y in zip(xs, ys,
                                                                                 strict=True))
            files.append(f)
        res, secs = _train(["train", "text", "--file", str(files[0]), "--test-file",
                            str(files[1]), "--text-col", "review", "--label-col", "sentiment",
                            "--seed", "42", "--quiet", "--json"])
    rec, rsecs = _train(["train", "imdb", "--recipe", "recommended", "--data-dir", str(data),
                         "--seed", "42", "--quiet", "--json"])
    acc, racc = res["test"]["accuracy"], rec["test_accuracy"]
    return {"row": "text IMDB as CSV", "split": "official 25k / 25k", "metric": "accuracy",
            "rnnkit": round(acc, 4), "imdb_recommended": round(racc, 4),
            "target": "within 1 point of train imdb --recipe recommended",
            "met": acc >= racc - 0.01, "seconds": round(secs, 1),
            "recommended_seconds": round(rsecs, 1)}


def translation_row(data: Path, train_pairs: int = 30_000, test_pairs: int = 1_000
                    ) -> dict[str, Any]:
    """tatoeba eng-fra: the first ``train_pairs`` pairs after a seeded shuffle train (the CLI
    holds out its own validation split from them), the next ``test_pairs`` are the test set;
    cased BLEU (sacrebleu, detokenised) with beam 4."""
    import random

    f = data / "tatoeba" / "eng-fra.txt"
    if not f.is_file():
        return {"row": "translation tatoeba eng-fra", "skipped": f"{f} not found"}
    lines = [x for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]
    random.Random(42).shuffle(lines)
    with tempfile.TemporaryDirectory() as d:
        tr, te = Path(d) / "train.tsv", Path(d) / "test.tsv"
        tr.write_text("\n".join(lines[:train_pairs]) + "\n", encoding="utf-8")
        te.write_text("\n".join(lines[train_pairs:train_pairs + test_pairs]) + "\n",
                      encoding="utf-8")
        t0 = time.perf_counter()
        res = _run(["train", "seq2seq", "--file", str(tr), "--seed", "42", "--quiet", "--json",
                    "--out", str(Path(d) / "m")])
        secs = time.perf_counter() - t0
        greedy = _run(["evaluate", str(Path(d) / "m"), "--file", str(te), "--json"])
        beam = _run(["evaluate", str(Path(d) / "m"), "--file", str(te), "--beam-width", "4",
                     "--json"])
    return {"row": "translation tatoeba eng-fra",
            "split": f"{train_pairs} / {test_pairs} (seeded shuffle)",
            "metric": "cased BLEU, beam 4", "rnnkit": round(beam["bleu"], 2),
            "greedy": round(greedy["bleu"], 2),
            "baseline_constant": round(beam["baseline_bleu"], 2),
            "val_bleu": res.get("val_bleu"), "target": "cased BLEU >= 25",
            "met": beam["bleu"] >= 25, "seconds": round(secs, 1)}


def m1_row(data: Path) -> dict[str, Any]:
    """The 181 yearly M1 series, one global model, the last 6 values held out."""
    f = data / "series" / "m1_yearly_dataset.tsf"
    if not f.is_file():
        return {"row": "forecast M1 yearly", "skipped": f"{f} not found"}
    res, secs = _train(["train", "forecast", "--file", str(f), "--seed", "42", "--quiet",
                        "--json"])
    m = res["metrics"]
    return {"row": "forecast M1 yearly", "split": "last 6 of each series",
            "flags": "(defaults)", "origins": res["series"], "mase": m["model"]["mase"],
            "mase_seasonal_naive": m["naive"]["mase"], "mase_naive": m["naive"]["mase"],
            "mase_drift": m["drift"]["mase"], "target": "mean MASE < naive",
            "met": m["model"]["mase"] < m["naive"]["mase"], "seconds": round(secs, 1)}


ROWS: dict[str, Callable[[Path], list[dict[str, Any]]]] = {
    "text": lambda d: [korean_row(d), imdb_csv_row(d)],
    "multilabel": lambda d: [korean_multilabel_row(d)],
    "tagger": lambda d: [tagger_row(d)],
    "translation": lambda d: [translation_row(d)],
    "forecast": lambda d: [
        forecast_row(d, "Lynx", ["--horizon", "6", "--lookback", "20"]),
        forecast_row(d, "ShampooSales", ["--horizon", "3", "--lookback", "6"]),
        m1_row(d),
    ],
    "series": lambda d: [
        series_row(d, "BasicMotions", "accuracy >= 0.97", lambda t: t["accuracy"] >= 0.97),
        series_row(d, "GunPoint", "accuracy >= 0.95", lambda t: t["accuracy"] >= 0.95),
        series_row(d, "PickupGestureWiimoteZ", "accuracy >= 1-NN + 0.05",
                   lambda t: t["accuracy"] >= t["baseline_1nn_accuracy"] + 0.05),
    ],
}


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _coverage(row: dict[str, Any]) -> str:
    c = row.get("interval_coverage", "absent")
    if c == "absent":
        return ""
    return "80% interval: none  " if c is None else f"80% interval covers {c:.1%}  "


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--task", "--only", dest="only", choices=sorted(ROWS), action="append",
                    help="run only this group of rows (repeatable)")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    data = _data_dir(args.data_dir)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    rows: list[dict[str, Any]] = []
    for group in args.only or sorted(ROWS):
        for row in ROWS[group](data):
            rows.append(row)
            if "skipped" in row:
                print(f"{row['row']:32} skipped: {row['skipped']}", flush=True)
            elif "subset_accuracy" in row:
                print(f"{row['row']:32} {row['metric']} {row['rnnkit']:.4f}  TF-IDF char 1-3 "
                      f"one-vs-rest {row['tfidf_char_1_3']:.4f} (thresholds tuned as "
                      f"rnnkit's: {row['tfidf_char_1_3_tuned']:.4f})  subset accuracy "
                      f"{row['subset_accuracy']:.4f} (majority set "
                      f"{row['majority_accuracy']:.4f})  {row['target']}  "
                      f"({row['seconds']:.0f} s)", flush=True)
            elif "tfidf_char_1_3" in row:
                print(f"{row['row']:32} {row['metric']} {row['rnnkit']:.4f}  TF-IDF word 1-2 "
                      f"{row['tfidf_word_1_2']:.4f}  char 1-3 {row['tfidf_char_1_3']:.4f}  "
                      f"Keras {_num(row.get('keras_peer'))}  "
                      f"target {row['target']}: {'met' if row['met'] else 'NOT met'}  "
                      f"({row['seconds']:.0f} s)", flush=True)
            elif "imdb_recommended" in row:
                print(f"{row['row']:32} {row['metric']} {row['rnnkit']:.4f}  train imdb "
                      f"--recipe recommended {row['imdb_recommended']:.4f}  target "
                      f"{row['target']}: {'met' if row['met'] else 'NOT met'}  "
                      f"({row['seconds']:.0f} s / {row['recommended_seconds']:.0f} s)",
                      flush=True)
            elif "baseline_constant" in row:
                print(f"{row['row']:32} {row['metric']} {row['rnnkit']:.2f}  greedy "
                      f"{row['greedy']:.2f}  constant baseline {row['baseline_constant']:.2f}  "
                      f"target {row['target']}: {'met' if row['met'] else 'NOT met'}  "
                      f"({row['seconds']:.0f} s)", flush=True)
            elif "baseline_word_majority" in row:
                print(f"{row['row']:32} {row['metric']} {row['rnnkit']:.4f}  most frequent tag "
                      f"per word {row['baseline_word_majority']:.4f}  Keras BiLSTM "
                      f"{_num(row.get('keras_peer'))}  target {row['target']}: "
                      f"{'met' if row['met'] else 'NOT met'}  ({row['seconds']:.0f} s)",
                      flush=True)
            elif "mase" in row:
                print(f"{row['row']:32} MASE {row['mase']:.3f}  seasonal naive "
                      f"{row['mase_seasonal_naive']:.3f}  naive {row['mase_naive']:.3f}  drift "
                      f"{row['mase_drift']:.3f}  ({row['origins']} origins, {row['flags']}) "
                      f"{_coverage(row)}"
                      f"target {row['target']}: {'met' if row['met'] else 'NOT met'}  "
                      f"({row['seconds']:.0f} s)", flush=True)
            else:
                print(f"{row['row']:32} acc {row['accuracy']:.4f}  macro-F1 "
                      f"{row['macro_f1']:.4f}  1-NN {row['baseline_1nn']:.4f}  target "
                      f"{row['target']}: {'met' if row['met'] else 'NOT met'}  "
                      f"({row['seconds']:.0f} s)", flush=True)
    print(f"commit {commit}, seed 42, {sys.executable}")
    if args.json:
        Path(args.json).write_text(json.dumps({"commit": commit, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
