"""The plug: connects the kernels and the fused planners to the layers that ask for them.

The core modules never import a kernel or a planner: :class:`rnnkit.recurrent.RNN` asks
``recurrent.BACKEND_RUNNER`` and :class:`rnnkit.layers.Sequential` asks
``layers.FAST_PATHS``. This module (imported by the package, ``import rnnkit``) fills both:

* the backend dispatch :func:`rnnkit.kernels.run` (lanes / blas / torch / reference), and
  :func:`rnnkit.kernels.run_bidirectional` (an unmasked bidirectional LSTM in one call);
* ``forward_no_grad``: :mod:`rnnkit.planner` runs the ``Embedding | OneHot -> RNN -> Dense``
  classifier without autograd in one compiled call (loaded on first use);
* ``embedding_rnn``: :mod:`rnnkit.fold` runs an ``Embedding -> RNN`` pair as one call with
  the embedding folded into the input projection (loaded on first use).

Without this module every layer still works, on the reference loop.
"""

from __future__ import annotations

from . import kernels
from .layers import register_fast_path
from .recurrent import register_backend_runner


def _forward_no_grad(model, x, mask):
    from .planner import forward_no_grad

    return forward_no_grad(model, x, mask)


def _embedding_rnn(emb, rnn, ids, mask):
    from .fold import embedding_rnn

    return embedding_rnn(emb, rnn, ids, mask)


register_backend_runner(kernels.run, kernels.run_bidirectional)
register_fast_path("forward_no_grad", _forward_no_grad)
register_fast_path("embedding_rnn", _embedding_rnn)
