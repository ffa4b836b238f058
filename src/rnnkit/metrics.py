"""Evaluation metrics shared by the tasks (plain numpy; inputs may be lists or tensors).

Classification, for true labels ``y`` and predictions ``p`` over classes ``0..K-1``::

    accuracy      = mean(p_i == y_i)
    C[t, q]       = #{i : y_i = t, p_i = q}            (rows: true class, columns: predicted)
    precision_k   = C[k, k] / sum_t C[t, k]            (0 when nothing was predicted as k)
    recall_k      = C[k, k] / sum_q C[k, q]            (0 when class k never occurs)
    F1_k          = 2 P_k R_k / (P_k + R_k)            (0 when P_k + R_k = 0)

plus the macro average (unweighted mean over classes) and the support ``sum_q C[k, q]``.

Entity level for BIO tags (``B-X`` begins an entity of type X, ``I-X`` continues it, ``O`` is
outside), as the CoNLL ``conlleval`` script counts: an entity is a maximal span
``(type, start, end)``; an ``I-X`` after ``O`` or after a different type starts a new entity
(so IOB1 files such as the original CoNLL-2003 are read correctly); ``E-X``/``S-X`` (BIOES)
end an entity. Precision = exact span-and-type matches / predicted entities, recall =
matches / true entities, F1 their harmonic mean.

Regression / forecasting, for actuals ``y``, forecasts ``f`` and the training series ``z``::

    MAE  = mean |y - f|
    RMSE = sqrt(mean (y - f)^2)
    MASE = MAE / mean_{t>m} |z_t - z_{t-m}|       (m = season; 1 = naive one-step scale)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "accuracy", "confusion_matrix", "precision_recall_f1", "classification_report",
    "format_classification_report", "bio_entities", "entity_scores", "masked_token_accuracy",
    "mae", "rmse", "mase",
]


def _as_int_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype.kind == "f":
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise ValueError("class labels must be integers")
    return a.astype(np.int64).reshape(-1)


def _as_float_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of positions where ``y_pred == y_true``."""
    t, p = _as_int_array(y_true), _as_int_array(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    if t.size == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float(np.mean(t == p))


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """``C[t, q]`` = how many items of true class ``t`` were predicted as ``q``."""
    t, p = _as_int_array(y_true), _as_int_array(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    if num_classes is None:
        num_classes = int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    c = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(c, (t, p), 1)
    return c


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    out = np.zeros_like(a)
    np.divide(a, b, out=out, where=b > 0)
    return out


def precision_recall_f1(y_true: Any, y_pred: Any, num_classes: int | None = None
                        ) -> dict[str, np.ndarray]:
    """Per-class ``precision``, ``recall``, ``f1`` and ``support`` arrays (length K)."""
    c = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(c).astype(np.float64)
    prec = _safe_div(tp, c.sum(axis=0))
    rec = _safe_div(tp, c.sum(axis=1))
    f1 = _safe_div(2 * prec * rec, prec + rec)
    return {"precision": prec, "recall": rec, "f1": f1, "support": c.sum(axis=1)}


def classification_report(y_true: Any, y_pred: Any, label_names: Sequence[str] | None = None
                          ) -> dict[str, Any]:
    """JSON-safe report: accuracy, per-class P/R/F1/support, macro averages, confusion matrix."""
    k = len(label_names) if label_names is not None else None
    c = confusion_matrix(y_true, y_pred, k)
    names = list(label_names) if label_names is not None else [str(i) for i in range(len(c))]
    prf = precision_recall_f1(y_true, y_pred, len(c))
    per_class = {
        name: {"precision": float(prf["precision"][i]), "recall": float(prf["recall"][i]),
               "f1": float(prf["f1"][i]), "support": int(prf["support"][i])}
        for i, name in enumerate(names)}
    return {
        "accuracy": accuracy(y_true, y_pred),
        "per_class": per_class,
        "macro": {m: float(np.mean(prf[m])) for m in ("precision", "recall", "f1")},
        "labels": names,
        "confusion_matrix": c.tolist(),
        "n": int(c.sum()),
    }


def format_classification_report(report: dict[str, Any]) -> str:
    """Human-readable table of :func:`classification_report` output."""
    names = report["labels"]
    w = max(12, *(len(n) for n in names))
    lines = [f"{'':{w}}  precision  recall      f1  support"]
    for n in names:
        r = report["per_class"][n]
        lines.append(f"{n:{w}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:6.3f}"
                     f"  {r['support']:7d}")
    m = report["macro"]
    lines.append(f"{'macro avg':{w}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:6.3f}"
                 f"  {report['n']:7d}")
    lines.append(f"accuracy {report['accuracy']:.4f} on {report['n']} examples")
    lines.append("confusion matrix (rows = true, columns = predicted):")
    cw = max(6, *(len(n) for n in names))
    lines.append(f"{'':{w}}  " + " ".join(f"{n[:cw]:>{cw}}" for n in names))
    for n, row in zip(names, report["confusion_matrix"], strict=True):
        lines.append(f"{n:{w}}  " + " ".join(f"{v:{cw}d}" for v in row))
    return "\n".join(lines)


# --------------------------------------------------------------------------- BIO entities

def _split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER" -> ("B", "PER")``, ``"O" -> ("O", "")``; a bare type counts as ``I``."""
    if tag in ("O", "", "_"):
        return "O", ""
    if len(tag) > 1 and tag[1] in "-_" and tag[0] in "BIESU":
        prefix = {"U": "S"}.get(tag[0], tag[0])
        return prefix, tag[2:]
    return "I", tag


def bio_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities ``(type, start, end_exclusive)`` in one tag sequence (conlleval rules)."""
    out: list[tuple[str, int, int]] = []
    cur_type, start = "", -1
    prev_prefix = "O"
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, typ = _split_tag(tag)
        # does an entity end before position i?
        if cur_type and (prefix in ("O", "B", "S") or typ != cur_type
                         or prev_prefix in ("E", "S")):
            out.append((cur_type, start, i))
            cur_type = ""
        # does an entity start at i?
        if prefix != "O" and not cur_type:
            cur_type, start = typ, i
        prev_prefix = prefix
    return out


def entity_scores(true_tags: Iterable[Sequence[str]], pred_tags: Iterable[Sequence[str]]
                  ) -> dict[str, Any]:
    """Entity-level precision/recall/F1 overall (micro) and per entity type.

    ``true_tags``/``pred_tags``: one tag sequence per sentence, of equal lengths.
    """
    tp: dict[str, int] = {}
    n_true: dict[str, int] = {}
    n_pred: dict[str, int] = {}
    for k, (t, p) in enumerate(zip(true_tags, pred_tags, strict=True)):
        if len(t) != len(p):
            raise ValueError(f"sentence {k}: {len(t)} true tags but {len(p)} predicted")
        te, pe = set(bio_entities(t)), set(bio_entities(p))
        for e in te:
            n_true[e[0]] = n_true.get(e[0], 0) + 1
        for e in pe:
            n_pred[e[0]] = n_pred.get(e[0], 0) + 1
        for e in te & pe:
            tp[e[0]] = tp.get(e[0], 0) + 1

    def prf(a: int, npred: int, ntrue: int) -> dict[str, float | int]:
        p = a / npred if npred else 0.0
        r = a / ntrue if ntrue else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return {"precision": p, "recall": r, "f1": f, "support": ntrue, "predicted": npred}

    types = sorted(set(n_true) | set(n_pred))
    per_type = {ty: prf(tp.get(ty, 0), n_pred.get(ty, 0), n_true.get(ty, 0)) for ty in types}
    overall = prf(sum(tp.values()), sum(n_pred.values()), sum(n_true.values()))
    return {**overall, "per_type": per_type}


def masked_token_accuracy(y_true: Any, y_pred: Any, mask: Any) -> float:
    """Accuracy over the positions where ``mask`` is true (padding excluded)."""
    t, p = _as_int_array(y_true), _as_int_array(y_pred)
    m = _as_int_array(mask).astype(bool)
    if not (t.shape == p.shape == m.shape):
        raise ValueError("y_true, y_pred and mask must have the same shape")
    if not m.any():
        raise ValueError("masked accuracy with no unmasked position is undefined")
    return float(np.mean(t[m] == p[m]))


# --------------------------------------------------------------------------- regression

def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error."""
    t, p = _as_float_array(y_true), _as_float_array(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"shapes differ: {t.shape} vs {p.shape}")
    return float(np.mean(np.abs(t - p)))


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error."""
    t, p = _as_float_array(y_true), _as_float_array(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"shapes differ: {t.shape} vs {p.shape}")
    return float(np.sqrt(np.mean((t - p) ** 2)))


def smape(y_true: Any, y_pred: Any) -> float:
    """Symmetric MAPE in percent, as in the M competitions:
    ``100 mean(2 |f - a| / (|a| + |f|))``, a term with ``a = f = 0`` counting as 0."""
    t, p = _as_float_array(y_true), _as_float_array(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"shapes differ: {t.shape} vs {p.shape}")
    den = np.abs(t) + np.abs(p)
    terms = np.divide(2 * np.abs(p - t), den, out=np.zeros_like(den), where=den > 0)
    return float(100 * np.mean(terms))


def mase(y_true: Any, y_pred: Any, y_train: Any, season: int = 1) -> float:
    """Mean absolute scaled error: MAE over the in-sample MAE of the seasonal-naive forecast
    ``z_t = z_{t-season}`` on the training series (per column for 2-D series, then averaged).
    """
    if season < 1:
        raise ValueError(f"season must be >= 1, got {season}")
    z = _as_float_array(y_train)
    if z.shape[0] <= season:
        raise ValueError(f"training series of length {z.shape[0]} is too short for "
                         f"season {season}")
    scale = float(np.mean(np.abs(z[season:] - z[:-season])))
    if scale == 0:
        raise ValueError("MASE is undefined: the training series is constant at lag "
                         f"{season}")
    return mae(y_true, y_pred) / scale
