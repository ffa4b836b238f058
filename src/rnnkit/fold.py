"""Embedding folded into the input projection of the recurrent layer that follows it::

    xp_t = E[id_t] W_x + b = T[id_t],     T = E W_x + b      (vocab x gates*units)

so a batch costs one small GEMM (``T``), one gather, and the fused recurrence; backward
scatters ``dxp`` into ``dT`` (``index_add_``) and autograd gives ``dE = dT W_x^T``,
``dW_x = E^T dT``, ``db = sum_v dT_v``. Used by :meth:`rnnkit.layers.Sequential.forward_with_mask`
for ``Embedding -> RNN`` when the RNN would run a fused CPU backend (``lanes``/``blas``),
returns no state, the vocabulary is at most a quarter of the batch's token count (else
building ``T`` and gathering from it cost as much as projecting the batch), and no input
dropout is active (its per-sequence mask on the embedding cannot be folded into ``T``).
Otherwise the layers run one after the other, unchanged.
Dropout masks are sampled exactly as :meth:`rnnkit.recurrent.RNN.forward` samples them.

Inference (no autograd) keeps ``T`` on the recurrent layer between calls, keyed by the
identity and version counter of ``E``, ``W_x`` and ``b`` (every in-place change of a
weight, an optimizer step or ``load_state_dict``, bumps its version and so rebuilds
``T``; a write through ``.data`` or a NumPy view bypasses the counter, as it bypasses
autograd: set :data:`TABLE_CACHE_MAX_BYTES` to 0 for code that updates weights that way), and
the ``blas`` kernel reads each step's row ``T[id_t]`` where it lies: a
prediction over many batches pays the input projection once for the vocabulary instead of
once per token, so the recurrent product is the only GEMM left per step. It is built on the
first call whose batch holds at least as many tokens as the vocabulary has rows, else on
the second call with the same weights, and only while it is at most
:data:`TABLE_CACHE_MAX_BYTES` (0 turns the cache off); a call with autograd (training)
frees it, and a stale table is freed before its successor is built, so at most one is held.
An LSTM the dispatch would give to oneDNN (which takes inputs, not projections) runs on
``blas`` then: half of its GEMM work is gone. ``Embedding -> Bidirectional`` (concat merge,
no state out) folds the same way for inference only: one table ``[T_f | T_b]`` (V, 2G) kept
on the ``Bidirectional`` layer, read by :func:`rnnkit.kernels.blas.bidirectional`.
"""

from __future__ import annotations

import ctypes
import importlib

import torch
from torch import Tensor

from .kernels import fused

#: the largest vocabulary x gates table kept on a layer between inference calls
TABLE_CACHE_MAX_BYTES = 128 << 20
_MALLOC_TRIM = None  # glibc's malloc_trim, False where there is none (_release_free_heap)


class Gather(torch.autograd.Function):
    """``(table (V,G), ids (B,T)) -> table[ids] (B,T,G)``; backward scatter-adds."""

    @staticmethod
    def forward(ctx, table: Tensor, ids: Tensor):
        ctx.save_for_backward(ids)
        ctx.shape = table.shape
        return torch.nn.functional.embedding(ids, table)

    @staticmethod
    def backward(ctx, d: Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError("the fused RNN kernels do not support double backward "
                               "(create_graph=True); use backend='reference'")
        (ids,) = ctx.saved_tensors
        dtable = torch.zeros(ctx.shape, dtype=d.dtype)
        dtable.index_add_(0, ids.reshape(-1), d.detach().reshape(-1, ctx.shape[1]))
        return dtable, None


def embedding_rnn(emb, rnn, ids: Tensor, mask: Tensor | None):
    """``(output, mask for the next layer)`` of ``rnn(emb(ids))`` in one fused call, or None
    when the pair is not foldable (then the caller runs the layers as usual)."""
    from .kernels import dispatch
    from .layers import Embedding, _check_ids
    from .recurrent import RNN, Bidirectional, dropout_mask

    if isinstance(emb, Embedding) and isinstance(rnn, Bidirectional):
        return _embedding_bidirectional(emb, rnn, ids, mask)
    if not (isinstance(emb, Embedding) and isinstance(rnn, RNN)):
        return None
    if torch.is_grad_enabled():  # training changes the weights: free a kept inference table
        rnn.__dict__.pop("_fold_table", None)
    w = emb.weight
    cell = rnn.cell
    inputs = _fold_inputs(emb, cell, ids, mask)
    if rnn.return_state or (rnn.training and rnn.dropout > 0) or inputs is None:
        return None
    emb_mask, probe = inputs
    batch = ids.shape[0]
    name = dispatch.select(rnn, probe, emb_mask, None, None)
    table = None if torch.is_grad_enabled() else \
        _inference_table(emb, rnn, name, probe, emb_mask, ids.numel())
    if table is not None:
        name = "blas"  # the kept table is read by the blas forward
    elif name not in ("lanes", "blas") or 4 * emb.input_dim > ids.numel():
        return None  # (a table not well below the batch's tokens saves nothing)
    _check_ids(ids, emb.input_dim, "Embedding")
    rec_mask = None
    if rnn.training and rnn.recurrent_dropout > 0:
        rec_mask = dropout_mask((batch, cell.units), rnn.recurrent_dropout, w)
    state = cell.initial_state(batch, w)
    m = None if emb_mask is None else emb_mask.to(torch.bool)
    ids = ids.long()
    if rnn.go_backwards:
        ids = ids.flip(1)
        m = None if m is None else m.flip(1)
    impl = importlib.import_module(f"{dispatch.__package__}.{dispatch.MODULES[name]}")
    rnn.last_backend, rnn.embedding_folded = name, True
    if table is not None:  # inference: each step reads its row of the kept table
        out, _ = fused.run_projected(impl, rnn, table, state, m, rec_mask, ids=ids.contiguous())
    else:
        xp = Gather.apply(cell.project_inputs(w), ids.contiguous())
        out, _ = fused.run_projected(impl, rnn, xp, state, m, rec_mask)
    return out, rnn.compute_mask(ids, emb_mask)


def _embedding_bidirectional(emb, bi, ids: Tensor, mask: Tensor | None):
    """``embedding_rnn`` for ``Embedding -> Bidirectional`` (concat merge, no state in or
    out): inference only, on a kept table ``[T_f | T_b]`` (V, 2G) for both directions read by
    :func:`rnnkit.kernels.blas.bidirectional`; None otherwise (the layers then run as
    usual, each direction on its own kernel)."""
    from .kernels import blas, dispatch
    from .layers import _check_ids

    if torch.is_grad_enabled():
        bi.__dict__.pop("_fold_table", None)
        return None
    f, b = bi.forward_layer, bi.backward_layer
    w = emb.weight
    inputs = _fold_inputs(emb, f.cell, ids, mask)
    if bi.merge_mode != "concat" or bi.return_state or inputs is None:
        return None
    emb_mask, probe = inputs
    if not dispatch.blas_pair(bi, probe, emb_mask):
        return None
    nbytes = emb.input_dim * 2 * f.cell.gates * f.cell.units * w.element_size()
    table = _kept_table(bi, _weights_key(emb, f.cell, b.cell), emb.input_dim, ids.numel(),
                        nbytes, lambda: torch.cat([affine_project(f.cell, w),
                                                   affine_project(b.cell, w)], dim=1))
    if table is None:
        return None
    _check_ids(ids, emb.input_dim, "Embedding")
    for layer in (f, b):
        layer.last_backend, layer.embedding_folded = "blas", True
    m = None if emb_mask is None else emb_mask.to(torch.bool)
    out = blas.bidirectional(bi, None, m, table=table, ids=ids.long().contiguous())
    return out, bi.compute_mask(ids, emb_mask)


def _fold_inputs(emb, cell, ids: Tensor, mask: Tensor | None) -> tuple | None:
    """``(the embedding's mask, a shape-only probe (B,T,D) of its output)`` when ``ids`` can
    be folded into ``cell``'s projection (a non-empty CPU batch of integer ids (B,T), a built
    cell taking the embedding's width), else None."""
    if (ids.dim() != 2 or ids.is_floating_point() or ids.device.type != "cpu"
            or ids.shape[1] == 0 or not cell.built or cell.input_size != emb.output_dim):
        return None
    probe = emb.weight.new_empty((1, 1, 1)).expand(*ids.shape, emb.output_dim)
    return emb.compute_mask(ids, mask), probe


def affine_project(cell, w: Tensor) -> Tensor:
    """``E W_x + b`` of one cell (its input projection of the whole embedding matrix)."""
    from .kernels import affine

    return affine.project(cell, w.detach()).contiguous()


def _kept_table(holder, key: tuple | None, vocab: int, tokens: int, nbytes: int,
                build) -> Tensor | None:
    """The table kept on ``holder`` under ``key``, built by ``build()`` when missing: on
    the first call with at least ``vocab`` tokens, else on the second with the same key;
    never above :data:`TABLE_CACHE_MAX_BYTES`; a stale table is freed first."""
    if key is None or nbytes > TABLE_CACHE_MAX_BYTES:  # (a kept table goes too: the cap
        holder.__dict__.pop("_fold_table", None)      # may have been lowered since)
        return None
    kept = holder.__dict__.pop("_fold_table", None)  # a stale table goes before a new one
    if kept is not None and kept[0] == key:
        if kept[1] is not None:
            holder.__dict__["_fold_table"] = kept
            return kept[1]
    elif vocab > tokens:  # first sight of these weights and a small call
        holder.__dict__["_fold_table"] = (key, None)
        return None
    _release_free_heap()
    table = build()
    holder.__dict__["_fold_table"] = (key, table)
    return table


def _release_free_heap() -> None:
    """Hand the free memory the C allocator keeps back to the OS (glibc's ``malloc_trim``;
    a no-op elsewhere) before a kept table is allocated: training frees tens of MB of
    temporaries that glibc holds on to (its mmap threshold rises with each freed large
    block), and the table would otherwise come on top of them in the process's RSS."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL(None).malloc_trim
        except (AttributeError, OSError):  # not glibc
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


def _weights_key(emb, *cells) -> tuple | None:
    """What the table depends on: each weight's storage, version counter, shape and dtype;
    None for weights made under ``torch.inference_mode`` (no version counter to key by)."""
    ws = (emb.weight, *(t for cell in cells for t in (cell.kernel, cell.input_bias())))
    if any(t is not None and t.is_inference() for t in ws):
        return None
    return tuple(None if t is None else (t.data_ptr(), t._version, tuple(t.shape), t.dtype)
                 for t in ws)


def _inference_table(emb, rnn, name: str, probe: Tensor, emb_mask, tokens: int) -> Tensor | None:
    """The cached ``T = E W_x + b`` for an inference call on the ``blas`` kernel, or None
    (no cache: the caller takes the per-call paths). See the module docstring."""
    from .kernels import dispatch

    if name == "torch" and rnn.backend == "auto":
        name = "blas" if dispatch.unsupported("blas", rnn, probe, emb_mask, None) is None else name
    if name != "blas":
        return None
    cell, w = rnn.cell, emb.weight
    return _kept_table(rnn, _weights_key(emb, cell), emb.input_dim, tokens,
                       emb.input_dim * cell.gates * cell.units * w.element_size(),
                       lambda: affine_project(cell, w))
