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
"""

from __future__ import annotations

import importlib

import torch
from torch import Tensor


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
    from .recurrent import RNN, dropout_mask

    if not (isinstance(emb, Embedding) and isinstance(rnn, RNN)):
        return None
    w = emb.weight
    cell = rnn.cell
    if (rnn.return_state or not cell.built or cell.input_size != emb.output_dim
            or ids.dim() != 2 or ids.is_floating_point() or ids.device.type != "cpu"
            or (rnn.training and rnn.dropout > 0) or ids.shape[1] == 0
            or 4 * emb.input_dim > ids.numel()):  # table not well below the batch: no saving
        return None
    emb_mask = emb.compute_mask(ids, mask)
    batch, time = ids.shape
    probe = w.new_empty((1, 1, 1)).expand(batch, time, emb.output_dim)
    name = dispatch.select(rnn, probe, emb_mask, None, None)
    if name not in ("lanes", "blas"):
        return None
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
    xp = Gather.apply(cell.project_inputs(w), ids.contiguous())
    from .kernels import fused

    impl = importlib.import_module(f"{dispatch.__package__}.{dispatch.MODULES[name]}")
    rnn.last_backend, rnn.embedding_folded = name, True
    out, _ = fused.run_projected(impl, rnn, xp, state, m, rec_mask)
    return out, rnn.compute_mask(ids, emb_mask)
