"""The whole sequence classifier in compiled calls: a training step and inference for

    ids -> Embedding | OneHot -> SimpleRNN | LSTM | GRU (last output) -> Dense(1, sigmoid)
                                                                   | Dense(K, softmax)

the shape of the IMDB models. With a few hundred tiny torch operations per batch, the
per-operation overhead of autograd and the optimizer costs more than the arithmetic; here
a span of training batches (many, or one) is one call into the compiled kernels
(``rk_train_span`` of ``kernels/csrc/kernels.h`` runs one training step per batch), and
inference over any number of sequences is another (``rk_infer``: chunks of sequences in
parallel, each step's input gathered from the
table as it is needed, nothing per step kept). What a training step computes, per batch of ``B``::

    T     = E W_x + b_x              (OneHot: W_x + b_x)       vocabulary x gates*units
    xp_t  = T[id_t]                                            (the fold of rnnkit.fold)
    h     = last real output of the recurrence (:mod:`.lanes`) over xp, mask ids != 0
    z     = h W_d + b_d;  out = sigmoid(z) | softmax(z)
    loss  = mean binary cross-entropy | mean sparse categorical cross-entropy (from z)
    grads by hand (BPTT as in :mod:`.kernels.lanes`); then clip (value, global norm) and one
    Keras RMSprop / Adam update (the rules of :mod:`rnnkit.optimizers`) on every parameter

It is used by :func:`rnnkit.train.fit` when :func:`plan` accepts the model, loss and
optimizer (else fit runs the usual autograd loop), and by ``Sequential`` and
:func:`rnnkit.train.predict` for inference without gradients.
``tests/test_kernels_classifier.py`` holds both to the autograd reference: same losses,
outputs and parameters after several steps.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .kernels import lanes, native
from .kernels.dispatch import LANES_MAX_UNITS
from .kernels.fused import KIND_CODE, cell_kind
from .kernels.optim import bump_versions, pointer_table

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


class TrainArgs(ctypes.Structure):
    """The arguments of ``rk_train_span`` (``rk_train_args`` in ``kernels/csrc/kernels.h``,
    field for field; every field is 8 bytes)."""

    _fields_ = [(n, _I64) for n in ("kind", "relu", "mask_zero", "binary", "emb", "adam", "nb",
                                    "nt", "nc", "nl", "nh", "ng", "nk", "nv", "nd",
                                    "nthreads")] + \
        [(n, _PTR) for n in ("ids_all", "y_all", "order")] + \
        [("nbatch", _I64), ("n_rml", _I64)] + \
        [(n, _PTR) for n in ("rml_all", "ids", "y", "e", "wx", "bx", "wh", "bh", "wd", "bd",
                             "table", "idl", "maskl", "xp", "hs", "hrp", "cs", "gs", "hh",
                             "last", "h0", "dxp", "dhp", "dh0", "dc0", "dlast", "out", "dz",
                             "dtable", "de", "dwx", "dbx", "dwh", "dbh", "dwd", "dbd")] + \
        [("nparams", _I64)] + \
        [(n, _PTR) for n in ("params", "grads", "s1", "s2", "sizes", "hyper")] + \
        [("t0", _I64), ("losses", _PTR), ("outs", _PTR)]


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
    from .layers import Dense, Embedding, OneHot, Sequential
    from .recurrent import GRU, LSTM, RNN, SimpleRNN

    if not native.available():
        return f"the compiled kernels are unavailable ({native.why_unavailable()})"
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
    if rnn.backend not in ("auto", "lanes", "numba"):
        return f"the RNN asks for backend {rnn.backend!r}"
    if rnn.return_sequences or rnn.return_state or rnn.dropout > 0:
        return "return_sequences, return_state or input dropout"
    if cell.units > LANES_MAX_UNITS:
        return f"more than {LANES_MAX_UNITS} units"
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
    return Parts(src, rnn, dense, KIND_CODE[kind], binary)


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
        self.xp = z((1, 1, 1, 1))  # unused: the step gathers xp_t from table (kernels.h)
        self.hs = z((nc, nh, nt, nl))
        self.hrp = z((nc, nh, nt, nl))
        self.cs = z((nc, nt, nh, nl) if p.kind == 1 else (1, 1, 1, 1))
        self.gs = z((nc, nt, ng, nl) if p.kind else (1, nt, 1, 1))
        self.hh = z((nc, nt, nh, nl) if p.kind == 2 else (1, 1, 1, 1))
        self.last = z((nc, nh, nl))
        self.h0 = z((nc, nh, nl))
        self.ones = np.ones((nc, nh, nl), npdt)
        vocab = p.source.weight.shape[0] if hasattr(p.source, "weight") else \
            p.source.num_classes
        self.table = z((vocab, ng))
        self.ids = np.zeros((nb, nt), np.int64)  # the batch's ids (span kernels)
        self.y = np.zeros(nb, np.float64)
        self.outn = z((nb, nk))
        self.dz = np.zeros((nb, nk), np.float64)
        self.dtable = z((vocab, ng))
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
    if d.get("last_backend") != "lanes" or d.get("embedding_folded") is not True:
        rnn.last_backend, rnn.embedding_folded = "lanes", True


def _mask_zero(p: Parts) -> bool:
    return bool(p.source.mask_zero)


#: sequences per inference chunk (the lanes of :func:`_infer_chunk`; a multiple of
#: :data:`.lanes.LANES`): with 32-unit LSTM gates a chunk's step is 128 x 64 floats, 32 KB
INFER_LANES = 64


@torch.no_grad()
def infer_hidden(p: Parts, ids: Tensor) -> Tensor:
    """The RNN's output (N, H) for ``ids``, without autograd, in one compiled call
    (``rk_infer``; the Dense layer is left to the caller, so its hooks and the
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
    bxn, wh, bh = bx.detach().numpy(), cell.recurrent_kernel.detach().numpy(), \
        _bh(p).detach().numpy()
    table = np.empty((vocab, wx.shape[1]), wx.dtype)
    nd = e.shape[1] if emb else vocab
    infer_kernel(
        cell.kernel.dtype, native.threads(), p.kind, int(cell_relu(p)), int(_mask_zero(p)),
        int(emb), n, idn.shape[1], idn.ctypes.data, e.ctypes.data, wx.ctypes.data, bxn.ctypes.data,
        wh.ctypes.data, bh.ctypes.data, wx.shape[1], cell.units, vocab, nd, nl,
        table.ctypes.data, hidden.data_ptr())
    _ran_fused(p.rnn)
    return hidden


def infer_kernel(dtype: torch.dtype, *args) -> None:
    """``rk_infer`` for ``dtype`` with ``args`` (a module function: tests count the calls)."""
    native.fn("rk_infer", dtype)(*args)


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
        tables = tuple(pointer_table(x) for x in flat)
        sizes = np.array([pr.numel() for pr in self.params], np.int64)
        self._views, self._ptrs, self._states = (ws, gs, (tables, sizes)), ptrs, states
        return self._views

    def _args(self, w: _Work, nb: int, nt: int) -> TrainArgs:
        """The kernel's arguments for batches of ``nb`` x ``nt`` ids on the work arrays
        ``w`` (cached on ``w`` while the parameters' tensors stay the same)."""
        views = self._arrays()
        cached = w.__dict__.get("args")
        if cached is not None and cached[0] is views:
            return cached[1]
        p, cell = self.p, self.p.rnn.cell
        (e, wx, bx, wh, bh, wd, bd), grads, (tables, sizes) = views
        a = TrainArgs()
        a.kind, a.relu, a.mask_zero, a.binary = p.kind, cell_relu(p), _mask_zero(p), p.binary
        a.emb, a.adam, a.nb, a.nt, a.nc, a.nl = self.embedding, self.adam, nb, nt, w.nc, w.nl
        a.nh, a.ng, a.nk = cell.units, wx.shape[1], p.dense.units
        a.nv = w.table.shape[0]
        a.nd = e.shape[1] if self.embedding else a.nv
        for name, arr in zip(("e", "wx", "bx", "wh", "bh", "wd", "bd"),
                             (e, wx, bx, wh, bh, wd, bd), strict=True):
            setattr(a, name, arr.ctypes.data)
        for name, arr in zip(("de", "dwx", "dbx", "dwh", "dbh", "dwd", "dbd"), grads,
                             strict=True):
            setattr(a, name, arr.ctypes.data)
        for name in ("ids", "y", "table", "idl", "maskl", "xp", "hs", "hrp", "cs", "gs", "hh",
                     "last", "h0", "dxp", "dhp", "dh0", "dc0", "dlast", "dz", "dtable"):
            setattr(a, name, getattr(w, name).ctypes.data)
        a.out = w.outn.ctypes.data
        a.nparams = len(self.params)
        a.params, a.grads, a.s1, a.s2 = (ctypes.addressof(t) for t in tables)
        a.sizes = sizes.ctypes.data
        w.__dict__["args"] = (views, a)
        return a

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
        """``n`` training steps in one compiled call (``rk_train_span``), batch
        ``j`` = samples ``order[j B : (j+1) B]`` of :meth:`prepare`'s arrays: the same
        steps, in the same order and with the same random numbers, as calling the step on
        each batch. Returns the batches' losses and their outputs (n B, K). A partial last
        batch of ``m`` samples is a span of one over ``order[-m:]`` with
        ``batch_size=m``."""
        p = self.p
        w = self._batch_work(batch_size, idn.shape[1])
        dropout = p.rnn.training and p.rnn.recurrent_dropout > 0
        rml = np.stack([self._rml(w, batch_size) for _ in range(n)]) if dropout \
            else w.ones[None]
        hyper = self._hyper()
        losses = np.zeros(n, np.float64)
        outs = torch.empty((n * batch_size, p.dense.units), dtype=p.rnn.cell.kernel.dtype)
        a = self._args(w, batch_size, idn.shape[1])
        idn, yb = np.ascontiguousarray(idn, np.int64), np.ascontiguousarray(yb, np.float64)
        order = np.ascontiguousarray(order, np.int64)
        # a batch too small to split into chunks (lanes.chunking) runs all of its step on one
        # thread: the table, scatter and GEMM passes' forks and joins then cost more than they
        # save (W2 LSTM(8) on two threads: 0.108 s an epoch, 0.098 s on one)
        a.nthreads = native.threads() if w.nc > 1 else 1
        a.ids_all, a.y_all, a.order = idn.ctypes.data, yb.ctypes.data, order.ctypes.data
        # n_rml 0: no recurrent dropout (the kernel skips h * r and reads hs for dW_h)
        a.nbatch, a.n_rml, a.rml_all = n, rml.shape[0] if dropout else 0, rml.ctypes.data
        a.hyper, a.t0 = hyper.ctypes.data, self._steps(n)
        a.losses, a.outs = losses.ctypes.data, outs.data_ptr()
        native.fn("rk_train_span", p.rnn.cell.kernel.dtype)(ctypes.byref(a))
        bump_versions(self.params)  # updated in place by the kernel
        _ran_fused(p.rnn)
        return losses, outs


def plan(model, loss: str, opt, clip_norm: float | None, clip_value: float | None,
         device: torch.device) -> TrainStep | str:
    """A :class:`TrainStep` when ``fit`` can train ``model`` with it, else one line saying
    why not (``fit`` records it as ``history.params["fused_step_why_not"]``)."""
    from .optimizers import Adam, RMSprop

    if device.type != "cpu":
        return f"device {device} (the fused step is CPU only)"
    p = parts(model)
    if isinstance(p, str):
        return p
    want = "binary_crossentropy" if p.binary else "sparse_categorical_crossentropy"
    if loss != want:
        return f"loss {loss!r} (the fused step computes {want})"
    if type(opt) not in (RMSprop, Adam) or len(opt.param_groups) != 1:
        return f"optimizer {type(opt).__name__} (rnnkit's RMSprop or Adam, one group)"
    group = opt.param_groups[0]
    if type(opt) is RMSprop and group["momentum"] > 0:
        return "RMSprop with momentum"
    if {id(x) for x in group["params"]} != {id(x) for x in model.parameters()} \
            or len(group["params"]) != len(list(model.parameters())):
        return "the optimizer does not hold exactly the model's parameters"
    return TrainStep(p, model, opt, clip_norm, clip_value)
