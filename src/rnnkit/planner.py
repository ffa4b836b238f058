"""The whole sequence classifier in compiled calls: a training step and inference for

    ids -> Embedding | OneHot -> SimpleRNN | LSTM | GRU (last output) -> Dense(1, sigmoid)
                                                                   | Dense(K, softmax)

the shape of the IMDB models. With a few hundred tiny torch operations per batch, the
per-operation overhead of autograd and the optimizer costs more than the arithmetic; here
a span of training batches (many, or one) is one Numba call (:func:`train_span_kernel` runs
:func:`train_kernel` on each), and inference over any number of sequences is another
(:func:`infer_kernel`: chunks of sequences in parallel, each step's input gathered from the
table as it is needed, nothing per step kept). What a training step computes, per batch of ``B``::

    T     = E W_x + b_x              (OneHot: W_x + b_x)       vocabulary x gates*units
    xp_t  = T[id_t]                                            (the fold of rnnkit.fold)
    h     = last real output of the recurrence (:mod:`.lanes`) over xp, mask ids != 0
    z     = h W_d + b_d;  out = sigmoid(z) | softmax(z)
    loss  = mean binary cross-entropy | mean sparse categorical cross-entropy (from z)
    grads by hand (BPTT in :func:`.lanes.bwd`); then clip (value, global norm) and one
    Keras RMSprop / Adam update (the rules of :mod:`rnnkit.train`) on every parameter

It is used by :func:`rnnkit.train.fit` when :func:`plan` accepts the model, loss and
optimizer (else fit runs the usual autograd loop), and by ``Sequential`` and
:func:`rnnkit.train.predict` for inference without gradients.
``tests/test_kernels_classifier.py`` holds both to the autograd reference: same losses,
outputs and parameters after several steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from .kernels import lanes, mkl  # mkl registers its BLAS symbols before cached kernels load
from .kernels.mkl import blas_threads_local
from .kernels.numba_cpu import _FM, run_threaded
from .kernels.optim import optimizer_kernel

_SER = {"cache": True, "fastmath": _FM, "nogil": True, "error_model": "numpy"}
_PAR = {**_SER, "parallel": True}


# ------------------------------------------------------------------------------ kernels
@njit(inline="always")
def _gather_chunk(c, ids, mask_zero, table_t, idl, maskl, xp):
    """Chunk ``c``: ``xp[c, g, t, i] = T[ids[b, t], g]`` for ``b = c L + i`` (``table_t =
    T^T``, G x V); ``maskl`` 0 on padding ids (with mask_zero) and on the padding lanes."""
    nb, nt = ids.shape
    _, ng, _, nl = xp.shape
    for t in range(nt):
        for i in range(nl):
            b = c * nl + i
            v = ids[b, t] if b < nb else 0
            idl[c, t, i] = v
            maskl[c, t, i] = 0 if b >= nb or (mask_zero and v == 0) else 1
    for g in range(ng):
        for t in range(nt):
            for i in range(nl):
                xp[c, g, t, i] = table_t[g, idl[c, t, i]]


@njit(**_SER)
def _gather(ids, mask_zero, table_t, idl, maskl, xp):
    for c in range(xp.shape[0]):
        _gather_chunk(c, ids, mask_zero, table_t, idl, maskl, xp)


@njit(**_PAR)
def _gather_par(ids, mask_zero, table_t, idl, maskl, xp):
    for c in prange(xp.shape[0]):
        _gather_chunk(c, ids, mask_zero, table_t, idl, maskl, xp)


@njit(inline="always")
def _scatter_row(g, idl, dxp, dtable_t):
    """``dT^T[g, id] += dxp[c, g, t, i]`` (one gate row; padding lanes and masked steps
    carry a zero gradient)."""
    nc, _, nt, nl = dxp.shape
    for v in range(dtable_t.shape[1]):
        dtable_t[g, v] = 0.0
    for c in range(nc):
        for t in range(nt):
            for i in range(nl):
                dtable_t[g, idl[c, t, i]] += dxp[c, g, t, i]


@njit(**_SER)
def _scatter(idl, dxp, dtable_t):
    for g in range(dxp.shape[1]):
        _scatter_row(g, idl, dxp, dtable_t)


@njit(**_PAR)
def _scatter_par(idl, dxp, dtable_t):
    """:func:`_scatter` parallel over gate rows (no two threads write the same row)."""
    for g in prange(dxp.shape[1]):
        _scatter_row(g, idl, dxp, dtable_t)


@njit(**_SER)
def _head(last, wd, bd, y, binary, nb, out, dz):
    """Dense + loss: writes ``out`` (B, K) probabilities and ``dz`` = d mean-loss / d logits;
    returns the mean loss. ``y`` holds 0/1 targets (binary) or class ids."""
    nc, nh, nl = last.shape
    nk = wd.shape[1]
    z = np.empty(nk, np.float64)
    total = 0.0
    for b in range(nb):
        c, i = b // nl, b % nl
        for k in range(nk):
            s = bd[k]
            for h in range(nh):
                s += last[c, h, i] * wd[h, k]
            z[k] = s
        if binary:
            zz, yy = z[0], y[b]
            total += max(zz, 0.0) - zz * yy + math.log1p(math.exp(-abs(zz)))
            p = 1.0 / (1.0 + math.exp(-zz))
            out[b, 0] = p
            dz[b, 0] = (p - yy) / nb
        else:
            zm = z.max()
            s = 0.0
            for k in range(nk):
                s += math.exp(z[k] - zm)
            lab = int(y[b])
            total += math.log(s) + zm - z[lab]
            for k in range(nk):
                p = math.exp(z[k] - zm) / s
                out[b, k] = p
                dz[b, k] = (p - (1.0 if k == lab else 0.0)) / nb
    return total / nb


@njit(**_SER)
def _head_back(last, wd, dz, nb, dwd, dbd, dlast):
    nc, nh, nl = last.shape
    nk = wd.shape[1]
    dwd[:] = 0.0
    dbd[:] = 0.0
    dlast[:] = 0.0
    for b in range(nb):
        c, i = b // nl, b % nl
        for k in range(nk):
            d = dz[b, k]
            dbd[k] += d
            for h in range(nh):
                dwd[h, k] += last[c, h, i] * d
                dlast[c, h, i] += wd[h, k] * d


@njit(**_SER)
def _dw_h(hrp, dhp, dwh, dbh, gru):
    """``dW_h = sum_c hrp_c (H, T L) dhp_c^T``, ``db_h = sum dhp`` (GRU)."""
    nc, nh, nt, nl = hrp.shape
    ng = dhp.shape[1]
    for c in range(nc):
        mkl.gemm(hrp[c].reshape(nh, nt * nl), dhp[c].reshape(ng, nt * nl), dwh, False, True,
                 1.0, 1.0 if c > 0 else 0.0)
    dbh[:] = 0.0
    if gru:
        for c in range(nc):
            for g in range(ng):
                dbh[g] += dhp[c, g].sum()


@njit(**_SER)
def _table(emb, e, wx, bx, table_t):
    """``T^T = (E W_x + b_x)^T = W_x^T E^T + b_x`` (G x V), or ``(W_x + b_x)^T`` for OneHot
    (``emb`` False)."""
    if emb:
        mkl.gemm(wx, e, table_t, True, True)
        for g in range(table_t.shape[0]):
            for v in range(table_t.shape[1]):
                table_t[g, v] += bx[g]
    else:
        for g in range(table_t.shape[0]):
            for v in range(table_t.shape[1]):
                table_t[g, v] = wx[v, g] + bx[g]


@njit(**_SER)
def _input_grads(emb, e, wx, dtable_t, de, dwx, dbx):
    """From ``dT``: ``db_x = sum_v dT``, ``dW_x = E^T dT``, ``dE = dT W_x^T`` (OneHot:
    ``dW_x = dT``)."""
    ng, nv = dtable_t.shape
    for g in range(ng):
        dbx[g] = dtable_t[g].sum()
    if emb:
        mkl.gemm(e, dtable_t, dwx, True, True)
        mkl.gemm(dtable_t, wx, de, True, True)
    else:
        for v in range(nv):
            for g in range(ng):
                dwx[v, g] = dtable_t[g, v]


@njit(**_SER)
def train_kernel(kind, relu, mask_zero, binary, emb, ids, y, e, wx, bx, wh, bh, wd, bd, rml,
                 table_t, idl, maskl, xp, hs, hrp, cs, gs, hh, last, h0, dxp, dhp, dh0, dc0,
                 dlast, out, dz, dtable_t, de, dwx, dbx, dwh, dbh, dwd, dbd,
                 adam, params, grads, s1, s2, hyper, t):
    """One training step: forward, loss, backward (gradients into ``de, dwx, dbx, dwh,
    dbh, dwd, dbd``, which ``grads`` holds flattened) and the optimizer update of
    :func:`optimizer_kernel` with ``hyper = (lr, a, b, eps, clip_value, clip_norm)``.
    Returns the mean loss of the batch (before the update)."""
    nb = ids.shape[0]
    _table(emb, e, wx, bx, table_t)
    par = xp.shape[0] > 1  # more than one chunk: parallel passes
    if par:
        _gather_par(ids, mask_zero, table_t, idl, maskl, xp)
        lanes.fwd(kind, xp, h0, h0, wh, bh, maskl, rml, relu, hs, hrp, cs, gs, hh, last)
    else:
        _gather(ids, mask_zero, table_t, idl, maskl, xp)
        lanes.fwd1(kind, xp, h0, h0, wh, bh, maskl, rml, relu, hs, hrp, cs, gs, hh, last)
    loss = _head(last, wd, bd, y, binary, nb, out, dz)
    _head_back(last, wd, dz, nb, dwd, dbd, dlast)
    dys = np.zeros((1, 1, 0, 1), hs.dtype)  # no per-step output gradients (see lanes)
    if par:
        lanes.bwd(kind, hs, h0, cs, h0, gs, hh, wh, maskl, rml, relu, dys, dlast, h0, h0,
                  dxp, dhp, dh0, dc0)
    else:
        lanes.bwd1(kind, hs, h0, cs, h0, gs, hh, wh, maskl, rml, relu, dys, dlast, h0, h0,
                   dxp, dhp, dh0, dc0)
    _dw_h(hrp, dhp if kind == 2 else dxp, dwh, dbh, kind == 2)
    if par:
        _scatter_par(idl, dxp, dtable_t)
    else:
        _scatter(idl, dxp, dtable_t)
    _input_grads(emb, e, wx, dtable_t, de, dwx, dbx)
    optimizer_kernel(adam, params, grads, s1, s2, hyper[0], hyper[1], hyper[2], hyper[3], t,
                     hyper[4], hyper[5])
    return loss


@njit(**_SER)
def train_span_kernel(kind, relu, mask_zero, binary, emb, ids_all, y_all, order, nbatch,
                      rml_all, ids, y, e, wx, bx, wh, bh, wd, bd, table_t, idl, maskl, xp, hs,
                      hrp, cs, gs, hh, last, h0, dxp, dhp, dh0, dc0, dlast, out, dz, dtable_t,
                      de, dwx, dbx, dwh, dbh, dwd, dbd, adam, params, grads, s1, s2, hyper, t0,
                      losses, outs):
    """``nbatch`` batches, each one :func:`train_kernel` step: batch ``j`` holds the
    samples ``order[j B : (j+1) B]`` of ``ids_all``/``y_all`` (``B`` = rows of the
    ``ids``/``y`` buffers), Adam step ``t0 + j``, recurrent-dropout mask ``rml_all[j]``
    (``rml_all[0]`` for every batch when it holds one). Writes ``losses[j]`` and the
    batch's outputs into ``outs[j B : (j+1) B]``.
    With one chunk (the whole batch on this thread) the batch's GEMMs run single-threaded
    too, as the per-step products inside a chunk do."""
    nb, nt = ids.shape
    one = xp.shape[0] == 1
    old = blas_threads_local(1) if one else 0
    for j in range(nbatch):
        for r in range(nb):
            s = order[j * nb + r]
            for tt in range(nt):
                ids[r, tt] = ids_all[s, tt]
            y[r] = y_all[s]
        rml = rml_all[j] if rml_all.shape[0] > 1 else rml_all[0]
        losses[j] = train_kernel(
            kind, relu, mask_zero, binary, emb, ids, y, e, wx, bx, wh, bh, wd, bd, rml,
            table_t, idl, maskl, xp, hs, hrp, cs, gs, hh, last, h0, dxp, dhp, dh0, dc0, dlast,
            out, dz, dtable_t, de, dwx, dbx, dwh, dbh, dwd, dbd, adam, params, grads, s1, s2,
            hyper, t0 + j)
        k0 = j * nb
        for r in range(nb):
            for k in range(out.shape[1]):
                outs[k0 + r, k] = out[r, k]
    if one:
        blas_threads_local(old)


@njit(inline="always", fastmath=_FM)
def _infer_chunk(c, kind, relu, mask_zero, ids, table_t, wh, bh, nl, hidden, blas):
    """Sequences ``c L .. c L + L - 1`` of ``ids`` (N x T) on ``L = nl`` lanes: the
    recurrence (:func:`.lanes.step`, each step's input ``T[id_t]`` gathered from ``table_t``
    as it is needed) and its last real output into ``hidden`` (N x H; 0 when a sequence has
    no real step). Nothing per step is kept."""
    nb, nt = ids.shape
    ng, nh = table_t.shape[0], wh.shape[0]
    dt = hidden.dtype
    x = np.empty((ng, nl), dt)
    pr = np.empty((ng, nl), dt)
    h = np.zeros((nh, nl), dt)
    cc = np.zeros((nh, nl), dt)
    lst = np.zeros((nh, nl), dt)
    m = np.empty(nl, dt)
    idv = np.empty(nl, np.int64)
    old = blas_threads_local(1) if blas else 0
    for t in range(nt):
        for i in range(nl):
            b = c * nl + i
            v = ids[b, t] if b < nb else 0
            idv[i] = v
            m[i] = 0.0 if b >= nb or (mask_zero and v == 0) else 1.0
        for g in range(ng):
            for i in range(nl):
                x[g, i] = table_t[g, idv[i]]
        lanes.step(kind, x, pr, h, cc, h, wh, bh, m, relu, blas)
        for k in range(nh):
            for i in range(nl):
                lst[k, i] = h[k, i] if m[i] != 0.0 else lst[k, i]
    for i in range(min(nl, nb - c * nl)):
        for k in range(nh):
            hidden[c * nl + i, k] = lst[k, i]
    if blas:
        blas_threads_local(old)


@njit(**_PAR)
def infer_kernel(kind, relu, mask_zero, emb, ids, e, wx, bx, wh, bh, nl, table_t, hidden):
    """The recurrence's last real output ``hidden[b]`` for every sequence ``b`` of ``ids``
    (N x T), forward only: the table ``T`` once, then chunks of ``nl`` sequences in
    parallel (:func:`_infer_chunk`; sequences are independent, so how they are batched does
    not matter)."""
    _table(emb, e, wx, bx, table_t)
    nc = -(-ids.shape[0] // nl)
    if lanes._use_blas(wh):
        for c in prange(nc):
            _infer_chunk(c, kind, relu, mask_zero, ids, table_t, wh, bh, nl, hidden, True)
    else:
        for c in prange(nc):
            _infer_chunk(c, kind, relu, mask_zero, ids, table_t, wh, bh, nl, hidden, False)


# ------------------------------------------------------------------------------ matching
@dataclass
class Parts:
    """The layers of a model :func:`parts` accepted."""
    source: torch.nn.Module      # Embedding or OneHot
    rnn: torch.nn.Module
    dense: torch.nn.Module
    kind: int                    # 0 SimpleRNN, 1 LSTM, 2 GRU
    binary: bool


def parts(model) -> Parts | str:
    """The model's layers when it has the fused classifier's shape, else why not."""
    from .kernels.dispatch import NUMBA_MAX_UNITS
    from .kernels.fused import cell_kind
    from .layers import Dense, Embedding, OneHot, Sequential
    from .recurrent import GRU, LSTM, RNN, SimpleRNN

    if not isinstance(model, Sequential) or len(model) != 3:
        return "not a Sequential of 3 layers"
    src, rnn, dense = model[0], model[1], model[2]
    # exact types: a subclass may change forward, which the fused code would not see
    if type(src) not in (Embedding, OneHot):
        return "the first layer is not an Embedding or OneHot"
    if type(rnn) not in (RNN, SimpleRNN, LSTM, GRU) or type(dense) is not Dense:
        return "not Embedding|OneHot -> RNN -> Dense"
    kind = cell_kind(rnn.cell)
    cell = rnn.cell
    if kind is None or not cell.built or cell.bias is None:
        return "the RNN cell is not a built-in cell with bias"
    if rnn.backend not in ("auto", "numba"):
        return f"the RNN asks for backend {rnn.backend!r}"
    if rnn.return_sequences or rnn.return_state or rnn.dropout > 0:
        return "return_sequences, return_state or input dropout"
    if cell.units > NUMBA_MAX_UNITS:
        return f"more than {NUMBA_MAX_UNITS} units"
    if dense.input_size is None or dense.bias is None:
        return "the Dense layer is not built or has no bias"
    binary = dense.units == 1 and dense.activation == "sigmoid"
    if not binary and not (dense.units > 1 and dense.activation == "softmax"):
        return "the Dense layer is not Dense(1, sigmoid) or Dense(K, softmax)"
    size = src.output_dim if isinstance(src, Embedding) else src.num_classes
    if cell.input_size != size:
        return "input size mismatch"
    ws = [cell.kernel, cell.recurrent_kernel, cell.bias, dense.kernel, dense.bias]
    if isinstance(src, Embedding):
        ws.append(src.weight)
    if any(p.device.type != "cpu" or p.dtype not in (torch.float32, torch.float64)
           or p.dtype != ws[0].dtype for p in ws):
        return "parameters not all float32/float64 on the CPU"
    if not all(p.is_contiguous() for p in ws):  # the kernels take their rows as BLAS rows
        return "a parameter is not contiguous"
    return Parts(src, rnn, dense, {"simple": 0, "lstm": 1, "gru": 2}[kind], binary)


# ------------------------------------------------------------------------------ runners
class _Work:
    """A training step's scratch arrays for one batch size (reused across batches)."""

    def __init__(self, p: Parts, nb: int, nt: int):
        cell = p.rnn.cell
        dt = cell.kernel.dtype
        nh, ng, nk = cell.units, cell.kernel.shape[1], p.dense.units
        nc, nl = lanes.chunking(nb, nt, ng, nh)
        npdt = np.float32 if dt == torch.float32 else np.float64

        def z(shape):
            return np.zeros(shape, npdt)
        self.nc, self.nl = nc, nl
        self.idl = np.zeros((nc, nt, nl), np.int64)
        self.maskl = np.zeros((nc, nt, nl), np.uint8)
        self.xp = z((nc, ng, nt, nl))
        self.hs = z((nc, nh, nt, nl))
        self.hrp = z((nc, nh, nt, nl))
        self.cs = z((nc, nh, nt, nl) if p.kind == 1 else (1, 1, 1, 1))
        self.gs = z((nc, ng, nt, nl) if p.kind else (1, 1, nt, 1))
        self.hh = z((nc, nh, nt, nl) if p.kind == 2 else (1, 1, 1, 1))
        self.last = z((nc, nh, nl))
        self.h0 = z((nc, nh, nl))
        self.ones = np.ones((nc, nh, nl), npdt)
        vocab = p.source.weight.shape[0] if hasattr(p.source, "weight") else \
            p.source.num_classes
        self.table_t = z((ng, vocab))
        self.ids = np.zeros((nb, nt), np.int64)  # the batch's ids (span kernels)
        self.y = np.zeros(nb, np.float64)
        self.outn = z((nb, nk))
        self.dz = np.zeros((nb, nk), np.float64)
        self.dtable_t = z((ng, vocab))
        self.dxp = z((nc, ng, nt, nl))
        self.dhp = z((nc, ng, nt, nl)) if p.kind == 2 else z((1, 1, 1, 1))
        self.dh0, self.dc0 = z((nc, nh, nl)), z((nc, nh, nl))
        self.dlast = z((nc, nh, nl))


def _bh(p: Parts) -> Tensor:
    cell = p.rnn.cell
    return cell.bias[1] if p.kind == 2 else torch.zeros(cell.kernel.shape[1],
                                                        dtype=cell.kernel.dtype)


def _ids(p: Parts, ids: Tensor) -> np.ndarray:
    from .layers import OneHot, _check_ids

    if ids.dim() != 2 or ids.is_floating_point():
        raise ValueError(f"expected (batch, time) integer ids, got {tuple(ids.shape)} "
                         f"{ids.dtype}")
    n = p.source.num_classes if isinstance(p.source, OneHot) else p.source.input_dim
    _check_ids(ids, n, type(p.source).__name__)
    ids = ids.long()
    if p.rnn.go_backwards:
        ids = ids.flip(1)
    return ids.contiguous().numpy()


def _ran_fused(rnn) -> None:
    """Records on the layer that the fused code ran (``last_backend``,
    ``embedding_folded``); written only when they change (``nn.Module.__setattr__`` costs
    a few microseconds, paid on every batch otherwise)."""
    d = rnn.__dict__
    if d.get("last_backend") != "numba" or d.get("embedding_folded") is not True:
        rnn.last_backend, rnn.embedding_folded = "numba", True


def _mask_zero(p: Parts) -> bool:
    return bool(p.source.mask_zero)


#: sequences per inference chunk (the lanes of :func:`_infer_chunk`; a multiple of
#: :data:`.lanes.LANES`): with 32-unit LSTM gates a chunk's step is 128 x 64 floats, 32 KB
INFER_LANES = 64


@torch.no_grad()
def infer_hidden(p: Parts, ids: Tensor) -> Tensor:
    """The RNN's output (N, H) for ``ids``, without autograd, in one compiled call
    (:func:`infer_kernel`; the Dense layer is left to the caller, so its hooks and the
    losses' logits tap still see it)."""
    from .layers import Embedding

    idn = _ids(p, ids)
    n = idn.shape[0]
    cell = p.rnn.cell
    wx = cell.kernel.numpy()
    emb = isinstance(p.source, Embedding)
    e = p.source.weight.numpy() if emb else np.zeros((1, 1), wx.dtype)
    vocab = e.shape[0] if emb else p.source.num_classes
    bx = cell.bias[0] if p.kind == 2 else cell.bias
    nl = min(INFER_LANES, -(-max(n, 1) // lanes.LANES) * lanes.LANES)
    hidden = torch.empty((n, cell.units), dtype=cell.kernel.dtype)
    run_threaded(infer_kernel, p.kind, cell_relu(p), _mask_zero(p), emb, idn, e, wx,
                 bx.numpy(), cell.recurrent_kernel.numpy(), _bh(p).numpy(), nl,
                 np.empty((wx.shape[1], vocab), wx.dtype), hidden.numpy())
    _ran_fused(p.rnn)
    return hidden


def forward_no_grad(model, x: Tensor, mask: Tensor | None) -> Tensor | None:
    """``model(x)`` through :func:`infer_hidden` when gradients are off and the model has
    the fused classifier's shape (no recurrent dropout active), else None."""
    if torch.is_grad_enabled() or mask is not None or x.dim() != 2 \
            or x.is_floating_point() or x.device.type != "cpu" or x.shape[1] == 0:
        return None
    p = parts(model)
    if isinstance(p, str) or (p.rnn.training and p.rnn.recurrent_dropout > 0):
        return None
    return p.dense(infer_hidden(p, x))


def cell_relu(p: Parts) -> bool:
    return p.kind == 0 and p.rnn.cell.activation == "relu"


class TrainStep:
    """``step(ids, y) -> (loss, outputs)``: one fused training step of a matched model with
    a Keras RMSprop (no momentum) or Adam optimizer from :mod:`rnnkit.train`. Gradients
    and optimizer state live in the optimizer's own state tensors, so training can go on
    with the autograd loop at any time."""

    def __init__(self, p: Parts, model, opt, clip_norm: float | None,
                 clip_value: float | None):
        from .layers import Embedding
        from .optimizers import Adam

        self.p, self.model, self.opt = p, model, opt
        self.adam = isinstance(opt, Adam)
        self.clip = (float(clip_value) if clip_value is not None else 0.0,
                     float(clip_norm) if clip_norm is not None else 0.0)
        self.params = list(model.parameters())
        self.embedding = isinstance(p.source, Embedding)
        self.grads = [torch.zeros_like(pr) for pr in self.params]
        self._work: dict[tuple[int, int], _Work] = {}
        self._views: tuple | None = None
        self._ptrs: tuple = ()

    def _grad(self, param) -> np.ndarray:
        return next(g for pr, g in zip(self.params, self.grads, strict=True) if pr is param).numpy()

    def _arrays(self) -> tuple:
        """NumPy views of weights, gradients and optimizer state (rebuilt when a tensor
        was replaced, e.g. by ``load_state_dict`` with ``assign=True``)."""
        p, cell = self.p, self.p.rnn.cell
        opt = self.opt
        states = []
        for pr in self.params:
            st = opt.state[pr]
            if self.adam and not st:
                st["step"], st["m"], st["v"] = 0, torch.zeros_like(pr), torch.zeros_like(pr)
            elif not self.adam and not st:
                st["velocity"] = torch.zeros_like(pr)
            states.append(st)
        ptrs = tuple(t.data_ptr() for t in self.params) + tuple(
            (st["m"] if self.adam else st["velocity"]).data_ptr() for st in states)
        if self._views is not None and ptrs == self._ptrs:
            return self._views
        dt = cell.kernel.dtype
        dummy = np.zeros((1, 1), np.float32 if dt == torch.float32 else np.float64)
        gb = self._grad(cell.bias)
        if p.kind == 2:
            dbx, dbh = gb[0], gb[1]
        else:
            dbx, dbh = gb, np.zeros_like(gb)
        ws = (p.source.weight.detach().numpy() if self.embedding else dummy,
              cell.kernel.detach().numpy(),
              (cell.bias[0] if p.kind == 2 else cell.bias).detach().numpy(),
              cell.recurrent_kernel.detach().numpy(), _bh(p).detach().numpy(),
              p.dense.kernel.detach().numpy(), p.dense.bias.detach().numpy())
        gs = (self._grad(p.source.weight) if self.embedding else dummy,
              self._grad(cell.kernel), dbx, self._grad(cell.recurrent_kernel), dbh,
              self._grad(p.dense.kernel), self._grad(p.dense.bias))
        s1 = tuple((st["m"] if self.adam else st["velocity"]).view(-1).numpy()
                   for st in states)
        s2 = tuple(st["v"].view(-1).numpy() for st in states) if self.adam else s1
        flat = (tuple(pr.detach().view(-1).numpy() for pr in self.params),
                tuple(g.view(-1).numpy() for g in self.grads), s1, s2)
        self._views, self._ptrs, self._states = (ws, gs, flat), ptrs, states
        return self._views

    def _batch_work(self, nb: int, nt: int) -> _Work:
        w = self._work.get((nb, nt))
        if w is None:
            w = self._work[(nb, nt)] = _Work(self.p, nb, nt)
        return w

    def targets(self, y: Tensor, nb: int) -> np.ndarray:
        """``y`` as ``nb`` float64 targets (class ids checked for a softmax head)."""
        p = self.p
        yb = y.detach().reshape(nb).to(torch.float64).numpy()
        if not p.binary and yb.size and (yb.min() < 0 or yb.max() >= p.dense.units):
            raise ValueError(f"class ids must lie in [0, {p.dense.units})")
        return yb

    def _rml(self, w: _Work, nb: int) -> np.ndarray:
        """This batch's recurrent-dropout mask in lanes (ones without dropout)."""
        from .recurrent import dropout_mask

        p, cell = self.p, self.p.rnn.cell
        if p.rnn.training and p.rnn.recurrent_dropout > 0:
            rm = dropout_mask((nb, cell.units), p.rnn.recurrent_dropout, cell.kernel)
            return lanes.to_lanes(rm.detach(), w.nc, w.nl).numpy()
        return w.ones

    def _steps(self, n: int) -> int:
        """Advances Adam's step count by ``n`` batches; returns the first batch's step."""
        if not self.adam:
            return 0
        for st in self._states:
            st["step"] += n
        return self._states[0]["step"] - n + 1

    def _hyper(self) -> np.ndarray:
        group = self.opt.param_groups[0]
        a = group["beta_1"] if self.adam else group["rho"]
        b = group["beta_2"] if self.adam else 0.0
        return np.array([group["lr"], a, b, group["eps"], *self.clip])

    def __call__(self, ids: Tensor, y: Tensor) -> tuple[float, Tensor]:
        """One training step on one batch; returns its loss and outputs."""
        idn = _ids(self.p, ids)
        nb = idn.shape[0]
        losses, outs = self.run_span(idn, self.targets(y, nb), np.arange(nb), 1, nb)
        return float(losses[0]), outs

    def prepare(self, x: Tensor, y: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """All samples' ids (range checked once, reversed for ``go_backwards``) and targets,
        for :meth:`run_span`."""
        idn = _ids(self.p, x)
        return idn, self.targets(y, idn.shape[0])

    def run_span(self, idn: np.ndarray, yb: np.ndarray, order: np.ndarray, n: int,
                 batch_size: int) -> tuple[np.ndarray, Tensor]:
        """``n`` training steps in one compiled call (:func:`train_span_kernel`), batch
        ``j`` = samples ``order[j B : (j+1) B]`` of :meth:`prepare`'s arrays: the same
        steps, in the same order and with the same random numbers, as calling the step on
        each batch. Returns the batches' losses and their outputs (n B, K). A partial last
        batch of ``m`` samples is a span of one over ``order[-m:]`` with
        ``batch_size=m``."""
        p = self.p
        w = self._batch_work(batch_size, idn.shape[1])
        rml = np.stack([self._rml(w, batch_size) for _ in range(n)]) \
            if p.rnn.training and p.rnn.recurrent_dropout > 0 else w.ones[None]
        (e, wx, bx, wh, bh, wd, bd), (de, dwx, dbx, dwh, dbh, dwd, dbd), flat = self._arrays()
        losses = np.zeros(n, np.float64)
        outs = torch.empty((n * batch_size, p.dense.units), dtype=p.rnn.cell.kernel.dtype)
        run_threaded(
            train_span_kernel, p.kind, cell_relu(p), _mask_zero(p), p.binary, self.embedding,
            idn, yb, order, n, rml, w.ids, w.y, e, wx, bx, wh, bh, wd, bd, w.table_t,
            w.idl, w.maskl, w.xp, w.hs, w.hrp, w.cs, w.gs, w.hh, w.last, w.h0, w.dxp, w.dhp,
            w.dh0, w.dc0, w.dlast, w.outn, w.dz, w.dtable_t, de, dwx, dbx, dwh, dbh, dwd, dbd,
            self.adam, *flat, self._hyper(), self._steps(n), losses, outs.numpy())
        _ran_fused(p.rnn)
        return losses, outs


def plan(model, loss: str, opt, clip_norm: float | None, clip_value: float | None,
         device: torch.device) -> TrainStep | None:
    """A :class:`TrainStep` when ``fit`` can train ``model`` with it, else None."""
    from .optimizers import Adam, RMSprop

    if device.type != "cpu":
        return None
    p = parts(model)
    if isinstance(p, str):
        return None
    want = "binary_crossentropy" if p.binary else "sparse_categorical_crossentropy"
    if loss != want:
        return None
    if type(opt) not in (RMSprop, Adam) or len(opt.param_groups) != 1:
        return None
    group = opt.param_groups[0]
    if type(opt) is RMSprop and group["momentum"] > 0:
        return None
    if {id(x) for x in group["params"]} != {id(x) for x in model.parameters()}:
        return None
    if len(group["params"]) != len(list(model.parameters())):
        return None
    return TrainStep(p, model, opt, clip_norm, clip_value)
