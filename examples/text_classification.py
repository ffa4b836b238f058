"""Text classification from files: SMS spam (``label<TAB>text``, binary, sigmoid) and news
headlines from a CSV (three topics, softmax), each reported per class with a confusion
matrix beside the majority-class baseline.

    python examples/text_classification.py [--sms FILE] [--csv FILE --text-col C --label-col L]

Default data: tests/fixtures/sms_spam_tiny.tsv and tests/fixtures/headlines_tiny.csv (small,
generated in the style of the UCI SMS Spam Collection and of news headlines).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from rnnkit.metrics import format_classification_report
from rnnkit.tasks.classify import ClassifierSpec, TextClassifier
from rnnkit.tasks.textfile import (
    encode_labels,
    evaluate_texts,
    label_names,
    read_labelled,
    split_data,
)

ROOT = Path(__file__).resolve().parents[1]


def run(data, title: str) -> None:
    train, val, test = split_data(data, test_fraction=0.2, val_fraction=0.1, seed=0)
    names = label_names(data.labels)
    spec = ClassifierSpec(cell="gru", units=16, embed_dim=16, num_words=2000, maxlen=50,
                          mask=True)
    torch.manual_seed(0)
    clf = TextClassifier.create(spec, train.texts, names)
    enc = clf.encoder
    clf.fit(clf.train_ids, encode_labels(train.labels, names),
            validation_data=(enc.encode(val.texts), encode_labels(val.labels, names)),
            optimizer="adam", lr=1e-2, batch_size=16, epochs=10, patience=3, verbose=0)
    report = evaluate_texts(clf, test)
    print(f"== {title}: {len(train)} train / {len(val)} validation / {len(test)} test")
    print(format_classification_report(report))
    print(f"majority-class baseline accuracy {report['baseline_majority_accuracy']:.4f}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sms", default=str(ROOT / "tests/fixtures/sms_spam_tiny.tsv"))
    ap.add_argument("--csv", default=str(ROOT / "tests/fixtures/headlines_tiny.csv"))
    ap.add_argument("--text-col", default="headline")
    ap.add_argument("--label-col", default="topic")
    args = ap.parse_args()
    torch.set_num_threads(1)
    run(read_labelled(args.sms), f"SMS spam ({Path(args.sms).name})")
    run(read_labelled(args.csv, args.text_col, args.label_col),
        f"CSV ({Path(args.csv).name}, {args.text_col} -> {args.label_col})")


if __name__ == "__main__":
    main()
