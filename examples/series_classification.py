"""Time-series classification example: an LSTM-FCN on a UCR/UEA set, beside the 1-NN
Euclidean baseline on the archive's own train/test split.

    python examples/series_classification.py [NAME] [--data-dir DIR] [--epochs N]

NAME: BasicMotions (default; 6 channels), GunPoint or PickupGestureWiimoteZ (variable
length), read from DIR/series/NAME_{TRAIN,TEST}.ts (DIR: --data-dir, RNNKIT_DATA_DIR or
../shared/data).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rnnkit.metrics import format_classification_report
from rnnkit.tasks.series import SeriesClassifier, SeriesSpec, read_ts

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", nargs="?", default="BasicMotions")
    ap.add_argument("--data-dir", default=os.environ.get("RNNKIT_DATA_DIR",
                                                         str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--epochs", type=int, default=500)
    args = ap.parse_args()
    d = Path(args.data_dir) / "series"
    train, test = read_ts(d / f"{args.name}_TRAIN.ts"), read_ts(d / f"{args.name}_TEST.ts")
    clf = SeriesClassifier.create(SeriesSpec(), train)
    clf.fit(train, epochs=args.epochs, seed=42, verbose=1)
    report = clf.evaluate(test, train)
    print(format_classification_report(report))
    print(f"{args.name}: accuracy {report['accuracy']:.4f}, 1-NN Euclidean baseline "
          f"{report['baseline_1nn_accuracy']:.4f}")


if __name__ == "__main__":
    main()
