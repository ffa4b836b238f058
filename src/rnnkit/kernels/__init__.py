"""Backend dispatch for :class:`rnnkit.recurrent.RNN`.

Every backend computes exactly what :func:`rnnkit.recurrent.reference_scan` computes (the
readable reference); tests hold them equal in values and gradients. A backend is a function
``(layer, x, state, mask, in_mask, rec_mask) -> (outputs, final_state)`` with the arguments
prepared by ``RNN.forward`` (dropout masks already sampled, mask in input time order).

Backends:

* ``reference`` -- :meth:`RNN.run_reference`, a Python loop of torch ops (any cell, device).
* ``lanes``     -- :mod:`.lanes`: whole time loop forward and backward in one compiled
  call each, the batch in the vector lanes, chunks of it on threads when the work is large
  enough. CPU, float32/float64, built-in cells, small units.
* ``blas``      -- :mod:`.blas`: per-step recurrent GEMM (the kernels' GEMM: MKL's, or their
  own AVX-512 one), gate math fused in compiled code. CPU, float32/float64, built-in cells,
  large units; its forward also reads each step's projection from a folded Embedding table
  by id (:mod:`rnnkit.fold`).
* ``torch``     -- :mod:`.torch_nn`: ``torch.lstm``/``torch.gru``/``torch.rnn_*`` (cuDNN on
  CUDA, oneDNN's LSTM on the CPU); no recurrent dropout, masks only as post-padding (on
  CUDA not with ``go_backwards``).

``lanes`` and ``blas`` run C compiled by the install step (``csrc/``, loaded by
:mod:`.native`); without it (no C compiler at install) ``auto`` runs the reference loop and
warns once.

Beside the backends, :mod:`rnnkit.planner` runs a whole training step (and inference) of
the ``Embedding | OneHot -> RNN -> Dense`` classifier in one compiled call; ``rnnkit.fit``
consults it, and ``Sequential`` through :mod:`rnnkit.fastpaths` (as it does
:mod:`rnnkit.fold` for ``Embedding -> RNN`` pairs). The kernels import nothing of rnnkit
above :mod:`rnnkit.cells`.

``backend="auto"`` picks, on the CPU, ``blas`` for SimpleRNN and GRU and the ``torch`` path
(oneDNN) for float32 LSTM (post-padded masks without ``return_state`` included), else
``blas`` (:data:`.dispatch.CPU_ORDER`, with the
measurements behind it); on CUDA the ``torch`` path when it supports the call; otherwise
``reference``. The ``lanes`` kernels run inside the fused classifier step of
:mod:`rnnkit.planner` and when asked for by name.
"""

from __future__ import annotations

from .dispatch import (
    ALIASES,
    BACKENDS,
    LANES_MAX_UNITS,
    MODULES,
    run,
    run_bidirectional,
    select,
    unsupported,
)

__all__ = ["ALIASES", "BACKENDS", "LANES_MAX_UNITS", "MODULES", "run", "run_bidirectional",
           "select", "unsupported"]
