"""Time-series classification: one label per (multivariate, variable-length) series.

Data: :func:`read_ts` reads the UCR/UEA ``.ts`` format (``@`` header lines, then one series
per line, channels separated by ``:``, values by ``,``, the class label last; equal or
variable length, trailing NaN padding trimmed, inner gaps interpolated);
:func:`read_series_csv_table` reads CSV,
either one row per series (a ``label`` column and the values, univariate) or long format
(an ``id`` column, a ``label`` column, one row per time step and one column per channel).

Model (:class:`SeriesNet`, the LSTM-FCN shape of Karim et al. 2017, with masks)::

    z = (x - mean_c) / std_c                     per channel, fitted on the training series
    r = RNN(z, mask)_last                        LSTM/GRU (optionally bidirectional), the
                                                 state at each series' last real step
    f = masked-mean_t ReLU(BN(conv3(ReLU(BN(conv2(ReLU(BN(conv1(z)))))))))
                                                 FCN branch (8/5/3 wide, F/2F/F filters),
                                                 averaged over the real steps only
    logits = W [dropout(r); f] + b               (``outputs = "logits"``)

trained with Adam on the cross-entropy (from the logits). :func:`nearest_neighbour` is the
1-NN Euclidean baseline (series resampled to a common length by linear interpolation, the
usual treatment of variable lengths), computed on the same split.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import io
from ..errors import UserError
from ..layers import Dense, Dropout
from ..metrics import classification_report
from ..recurrent import GRU, LSTM, Bidirectional, lengths_to_mask
from ._atfile import read_at_file, read_text_file
from .forecast import fill_gaps
from .forecast import pad_series as pad
from .spec import Spec

if TYPE_CHECKING:
    from ..backup import Backup

TASK = "series"
#: the longest series and the most channels a file or a saved model may have
MAX_LENGTH, MAX_CHANNELS = 100_000, 1_000


@dataclass
class SeriesSet:
    """Series ``(T_i, C)`` float32 arrays and their labels (None for unlabelled data)."""

    series: list[np.ndarray]
    labels: list[str] | None
    source: str
    #: missing values inside series (not trailing padding) filled by :func:`fill_gaps`
    filled: int = 0
    #: how many series had any
    filled_series: int = 0

    def __len__(self) -> int:
        return len(self.series)

    @property
    def channels(self) -> int:
        return int(self.series[0].shape[1])


# --------------------------------------------------------------------------- readers

def read_series_file(path: str | Path, labelled: bool = True) -> SeriesSet:
    """:func:`read_ts` for ``.ts`` files, else :func:`read_series_csv_table`."""
    path = Path(path)
    if path.suffix.lower() == ".ts":
        return read_ts(path, labelled)
    return read_series_csv_table(path, labelled)


def _finish(path: Path, series: list[np.ndarray], labels: list[str] | None,
            filled: tuple[int, int] = (0, 0)) -> SeriesSet:
    if not series:
        raise UserError(f"{path}: no series")
    chans = {s.shape[1] for s in series}
    if len(chans) != 1:
        raise UserError(f"{path}: series have different numbers of channels {sorted(chans)}")
    return SeriesSet(series, labels, path.name, *filled)


def read_ts(path: str | Path, labelled: bool = True) -> SeriesSet:
    """Read a ``.ts`` file (see the module docstring); ``labelled``: labels are required
    (else read when the header declares them). ``?`` and ``NaN`` at the end of a
    channel are padding (trimmed; all channels of a series are cut to the shortest);
    missing values before or inside a series are filled by :func:`fill_gaps` (counted in
    ``filled``); a channel without values, a series without a label, mixed channel counts or
    a non-number are one-line errors naming the line."""
    path = Path(path)
    header, records = read_at_file(path)
    series: list[np.ndarray] = []
    labels: list[str] = []
    gaps = gapped = 0
    has_labels, declared = False, None
    for n, key, value in header:
        if key == "classlabel":
            parts = value.split()
            has_labels = bool(parts) and parts[0].lower() == "true"
            declared = parts[1:] if has_labels else None
        elif key == "timestamps" and value.lower() == "true":
            raise UserError(f"{path}:{n}: time-stamped .ts files are not supported")
    for n, line in records:
        chans = line.split(":")
        label = None
        if has_labels:
            if len(chans) < 2:
                raise UserError(f"{path}:{n}: no class label after the values")
            label = chans.pop().strip()
            if not label:
                raise UserError(f"{path}:{n}: empty class label")
            if declared and label not in declared:
                raise UserError(f"{path}:{n}: label {label!r} is not among the declared "
                                f"@classLabel values")
        if len(chans) > MAX_CHANNELS:
            raise UserError(f"{path}:{n}: {len(chans)} channels (at most {MAX_CHANNELS})")
        rows = []
        hit = False
        for c, chan in enumerate(chans):
            vals = []
            for v in chan.split(","):
                v = v.strip()
                if v in ("?", "NaN", "nan", ""):
                    vals.append(math.nan)
                    continue
                try:
                    vals.append(float(v))
                except ValueError:
                    raise UserError(f"{path}:{n}: channel {c + 1}: {v[:20]!r} is not a "
                                    "number") from None
            arr = np.asarray(vals, np.float64)
            if not np.isfinite(arr[~np.isnan(arr)]).all():
                raise UserError(f"{path}:{n}: channel {c + 1} has an infinite value")
            real = np.flatnonzero(~np.isnan(arr))
            if real.size == 0:
                raise UserError(f"{path}:{n}: channel {c + 1} has no values")
            arr, k = fill_gaps(arr[:real[-1] + 1])  # trailing padding cut, inner gaps filled
            gaps += k
            hit = hit or k > 0
            rows.append(arr)
        t = min(len(r) for r in rows)
        if t > MAX_LENGTH:
            raise UserError(f"{path}:{n}: series of {t} steps (at most {MAX_LENGTH})")
        if series and len(rows) != series[0].shape[1]:
            raise UserError(f"{path}:{n}: {len(rows)} channels, the first series has "
                            f"{series[0].shape[1]}")
        series.append(np.stack([r[:t] for r in rows], axis=1).astype(np.float32))
        gapped += hit
        if label is not None:
            labels.append(label)
    if labelled and not has_labels:
        raise UserError(f"{path}: no class labels (@classLabel false); labelled series needed")
    return _finish(path, series, labels if has_labels else None, (gaps, gapped))


def read_series_csv_table(path: str | Path, labelled: bool = True) -> SeriesSet:
    """CSV series. With an ``id`` column: long format, one row per step (rows of one id
    are consecutive, in time order), a ``label`` column (same on every row of an id) and
    every other column a channel (``time``/``t``/``step``/``timestamp`` columns are
    skipped). Without: one row per series, a ``label`` column and the values (univariate;
    empty trailing cells end a shorter series). ``labelled``: the label column is required."""
    path = Path(path)
    text = read_text_file(path)
    first = text.split("\n", 1)[0]
    delim = "\t" if "\t" in first and "," not in first else ","
    try:
        rows = list(csv.reader(text.splitlines(), delimiter=delim))
    except csv.Error as e:
        raise UserError(f"{path}: malformed CSV ({e})") from None
    if len(rows) < 2:
        raise UserError(f"{path}: needs a header row and at least one series")
    header = [h.strip().lower() for h in rows[0]]

    def num(cell: str, n: int, what: str) -> float:
        try:
            v = float(cell)
        except ValueError:
            raise UserError(f"{path}:{n}: {what}: {cell[:20]!r} is not a number") from None
        if not math.isfinite(v):
            raise UserError(f"{path}:{n}: {what}: {cell[:20]!r} is not a finite number")
        return v

    lab = header.index("label") if "label" in header else None
    series: list[np.ndarray] = []
    labels: list[str] = []
    if "id" in header:
        idc = header.index("id")
        chans = [i for i in range(len(header)) if i not in (idc, lab) and header[i] not in
                 ("time", "t", "step", "timestamp")]
        if not chans:
            raise UserError(f"{path}: no channel columns besides id/label/time")
        cur, steps, cur_label, seen = None, [], None, set()
        for n, row in enumerate(rows[1:], 2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise UserError(f"{path}:{n}: {len(row)} fields, the header has {len(header)}")
            sid = row[idc].strip()
            if sid != cur:
                if cur is not None:
                    series.append(np.asarray(steps, np.float32))
                    labels.append(cur_label)
                if sid in seen:
                    raise UserError(f"{path}:{n}: rows of series {sid!r} are not consecutive")
                seen.add(sid)
                cur, steps, cur_label = sid, [], row[lab].strip() if lab is not None else ""
            elif lab is not None and row[lab].strip() != cur_label:
                raise UserError(f"{path}:{n}: series {sid!r} changes its label")
            steps.append([num(row[i], n, header[i]) for i in chans])
            if len(steps) > MAX_LENGTH:
                raise UserError(f"{path}:{n}: series longer than {MAX_LENGTH} steps")
        if cur is not None:
            series.append(np.asarray(steps, np.float32))
            labels.append(cur_label)
    else:
        if labelled and lab is None:
            raise UserError(f"{path}: no 'label' column (columns: {', '.join(header[:8])})")
        for n, row in enumerate(rows[1:], 2):
            if not row or all(not c.strip() for c in row):
                continue
            cells = [c.strip() for i, c in enumerate(row) if i != lab]
            while cells and not cells[-1]:
                cells.pop()
            if not cells:
                raise UserError(f"{path}:{n}: no values")
            if len(cells) > MAX_LENGTH:
                raise UserError(f"{path}:{n}: series longer than {MAX_LENGTH} steps")
            series.append(np.asarray([[num(c, n, f"step {k + 1}")] for k, c in
                                      enumerate(cells)], np.float32))
            if lab is not None:
                label = row[lab].strip() if lab < len(row) else ""
                if not label:
                    raise UserError(f"{path}:{n}: empty label")
                labels.append(label)
    if labelled and lab is not None and any(not x for x in labels):
        raise UserError(f"{path}: a series has an empty label")
    return _finish(path, series, labels if lab is not None else None)


# --------------------------------------------------------------------------- model

@dataclass
class SeriesSpec(Spec):
    """Hyper-parameters of :class:`SeriesNet` (saved in ``config.json``)."""

    cell: str = "lstm"
    units: int = 8
    bidirectional: bool = False
    conv: bool = True
    filters: int = 64
    dropout: float = 0.5
    normalize: str = "channel"

    def __post_init__(self) -> None:
        self.check_choice("cell", ("lstm", "gru"))
        self.check_choice("normalize", ("channel", "series"))
        self.check_positive_ints("units", "filters")
        self.check_rates("dropout")


@io.register_model("SeriesNet")
class SeriesNet(nn.Module):
    """The model of the module docstring: ``forward(x (B, T, C), lengths (B,)) -> logits``.
    Inputs are standardised inside (``mean``/``std`` buffers, fitted on training data)."""

    outputs = "logits"

    def __init__(self, channels: int, classes: int, cell: str = "lstm", units: int = 8,
                 bidirectional: bool = False, conv: bool = True, filters: int = 64,
                 dropout: float = 0.5, normalize: str = "channel") -> None:
        super().__init__()
        if normalize not in ("channel", "series"):
            raise ValueError(f"normalize must be 'channel' or 'series', got {normalize!r}")
        self.cfg = {"channels": channels, "classes": classes, "cell": cell, "units": units,
                    "bidirectional": bidirectional, "conv": conv, "filters": filters,
                    "dropout": dropout, "normalize": normalize}
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        layer = {"lstm": LSTM, "gru": GRU}[cell]
        self.rnn = (Bidirectional(layer(units, input_size=channels)) if bidirectional
                    else layer(units, input_size=channels))
        self.drop = Dropout(dropout)
        width = units * (2 if bidirectional else 1)
        self.fcn = None
        if conv:
            f = filters
            self.fcn = nn.ModuleList()
            for cin, cout, k in ((channels, f, 8), (f, 2 * f, 5), (2 * f, f, 3)):
                self.fcn.append(nn.Conv1d(cin, cout, k))
                self.fcn.append(nn.BatchNorm1d(cout))
            width += f
        self.out = Dense(classes, input_size=width)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        mask = lengths_to_mask(lengths, x.shape[1], device=x.device)
        m3 = mask.unsqueeze(-1).to(x.dtype)
        if self.cfg["normalize"] == "series":  # each series and channel on its own
            n = m3.sum(1, keepdim=True).clamp(min=1)
            mu = (x * m3).sum(1, keepdim=True) / n
            sd = (((x - mu) * m3) ** 2).sum(1, keepdim=True).div(n).sqrt().clamp(min=1e-6)
            z = (x - mu) / sd * m3
        else:
            z = (x - self.mean) / self.std * m3
        feats = [self.drop(self.rnn(z, mask=mask))]
        if self.fcn is not None:
            h = z.transpose(1, 2)  # (B, C, T)
            m = mask.unsqueeze(1).to(h.dtype)
            for conv, bn in zip(self.fcn[0::2], self.fcn[1::2], strict=True):
                k = conv.kernel_size[0]  # "same" length: (k-1)//2 zeros before, k//2 after
                h = torch.relu(bn(conv(nn.functional.pad(h, ((k - 1) // 2, k // 2))))) * m
            feats.append(h.sum(-1) / m.sum(-1).clamp(min=1))
        return self.out.logits(torch.cat(feats, dim=-1))

    def get_config(self) -> dict:
        return dict(self.cfg)


# --------------------------------------------------------------------------- baseline

def _resample(s: np.ndarray, t: int) -> np.ndarray:
    if len(s) == t:
        return s
    src = np.linspace(0.0, 1.0, len(s))
    dst = np.linspace(0.0, 1.0, t)
    return np.stack([np.interp(dst, src, s[:, c]) for c in range(s.shape[1])], axis=1)


def nearest_neighbour(train: SeriesSet, test: SeriesSet) -> list[str]:
    """Labels of the 1-nearest-neighbour (Euclidean) classifier: every series resampled to
    the longest training length; ties go to the first training series."""
    assert train.labels is not None
    t = max(len(s) for s in train.series)
    a = np.stack([_resample(s, t).ravel() for s in train.series]).astype(np.float64)
    b = np.stack([_resample(s, t).ravel() for s in test.series]).astype(np.float64)
    d = (b * b).sum(1)[:, None] - 2 * b @ a.T + (a * a).sum(1)[None, :]
    return [train.labels[i] for i in d.argmin(1)]


# --------------------------------------------------------------------------- the task

class SeriesClassifier:
    """A series classifier ready to train, predict, evaluate and save/load itself."""

    def __init__(self, model: SeriesNet, spec: SeriesSpec, labels: list[str]) -> None:
        self.model, self.spec, self.labels = model, spec, labels
        self.train_seconds = 0.0

    @classmethod
    def create(cls, spec: SeriesSpec, train: SeriesSet) -> SeriesClassifier:
        if train.labels is None:
            raise UserError(f"{train.source}: the training series need labels")
        labels = sorted(set(train.labels), key=_label_key)
        if len(labels) < 2:
            raise UserError(f"{train.source}: needs at least 2 classes, got {labels}")
        model = SeriesNet(train.channels, len(labels), spec.cell, spec.units,
                          spec.bidirectional, spec.conv, spec.filters, spec.dropout,
                          spec.normalize)
        cat = np.concatenate(train.series).astype(np.float64)
        std = cat.std(0)
        model.mean.copy_(torch.from_numpy(cat.mean(0)).float())
        model.std.copy_(torch.from_numpy(np.where(std > 1e-8, std, 1.0)).float())
        return cls(model, spec, labels)

    def targets(self, data: SeriesSet) -> Tensor:
        if data.labels is None:
            raise UserError(f"{data.source}: the series have no labels")
        index = {x: i for i, x in enumerate(self.labels)}
        unknown = sorted(set(data.labels) - set(index))
        if unknown:
            raise UserError(f"{data.source}: labels not seen in training: "
                            f"{', '.join(unknown[:5])}")
        return torch.tensor([index[x] for x in data.labels])

    def _check_channels(self, data: SeriesSet) -> None:
        if data.channels != self.model.cfg["channels"]:
            raise UserError(f"{data.source}: {data.channels} channels, the model was trained "
                            f"on {self.model.cfg['channels']}")

    def fit(self, train: SeriesSet, *, epochs: int = 500, batch_size: int = 16,
            lr: float = 1e-3, seed: int | None = 42, verbose: int = 0,
            backup: Backup | None = None):
        """Adam on the cross-entropy for ``epochs`` epochs, the learning rate decaying from
        ``lr`` to ``lr / 100`` on a cosine; the last epoch's weights are kept (the UCR/UEA
        training sets are too small to hold out validation)."""
        from ..callbacks import LearningRateScheduler, cosine_schedule
        from ..train import fit

        self._check_channels(train)
        x, lengths = pad(train.series)
        start = time.perf_counter()
        history = fit(self.model, (x, lengths), self.targets(train),
                      loss="sparse_categorical_crossentropy", metrics=("accuracy",),
                      optimizer="adam", lr=lr, batch_size=batch_size, epochs=epochs,
                      seed=seed, verbose=verbose, clip_norm=5.0, backup=backup,
                      callbacks=[LearningRateScheduler(cosine_schedule(lr, epochs))])
        self.train_seconds = time.perf_counter() - start
        return history

    @torch.no_grad()
    def predict_proba(self, data: SeriesSet, batch_size: int = 64) -> np.ndarray:
        self._check_channels(data)
        self.model.eval()
        out = []
        for i in range(0, len(data), batch_size):
            x, lengths = pad(data.series[i:i + batch_size])
            out.append(torch.softmax(self.model(x, lengths), -1).double().numpy())
        return np.concatenate(out)

    def predict(self, data: SeriesSet) -> list[dict[str, Any]]:
        p = self.predict_proba(data)
        return [{"label": self.labels[int(r.argmax())], "probability": round(float(r.max()), 6),
                 "probabilities": {x: round(float(v), 6) for x, v in zip(self.labels, r,
                                                                          strict=True)}}
                for r in p]

    def evaluate(self, test: SeriesSet, train: SeriesSet | None = None) -> dict[str, Any]:
        """Accuracy, macro F1 and confusion matrix; with ``train``, the 1-NN baseline too."""
        y = self.targets(test).numpy()
        pred = self.predict_proba(test).argmax(1)
        report = classification_report(y, pred, self.labels)
        if train is not None:
            index = {x: i for i, x in enumerate(self.labels)}
            nn1 = [index[x] for x in nearest_neighbour(train, test)]
            report["baseline_1nn_accuracy"] = float(np.mean(np.asarray(nn1) == y))
        return report

    def save(self, model_dir: str | Path) -> Path:
        return io.save_model(model_dir, self.model, task=TASK,
                             extra={"labels": self.labels, "series": self.spec.to_dict()})

    @classmethod
    def load(cls, model_dir: str | Path) -> SeriesClassifier:
        model, cfg = io.load_model(model_dir)
        if cfg.get("task") != TASK or not isinstance(model, SeriesNet):
            raise UserError(f"{model_dir} holds a {cfg.get('task')!r} model, not a series "
                            "classifier")
        spec = SeriesSpec.from_dict(cfg.get("series"))
        labels = cfg.get("labels")
        if (not isinstance(labels, list) or len(labels) != model.cfg["classes"]
                or not all(isinstance(x, str) for x in labels) or len(set(labels)) < 2
                or len(set(labels)) != len(labels)):
            raise UserError(f"{model_dir}/config.json: labels must be "
                            f"{model.cfg['classes']} distinct strings")
        if not (torch.isfinite(model.std).all() and (model.std > 0).all()):
            raise UserError(f"{model_dir}: corrupt standardisation (std must be positive)")
        return cls(model, spec, labels)


def _label_key(x: str) -> tuple:
    """Numeric labels in numeric order ('2' before '10'), others alphabetically."""
    try:
        return (0, float(x), x)
    except ValueError:
        return (1, 0.0, x)
