"""rnnkit: recurrent neural networks from their equations, on PyTorch."""

from . import fastpaths  # plugs the kernels into the layers (see rnnkit.fastpaths)
from .cells import GRUCell, LSTMCell, RNNCellBase, SimpleRNNCell
from .convert import from_torch, get_keras_weights, set_keras_weights, to_torch
from .layers import Dense, Dropout, Embedding, OneHot, Sequential, clip_gradients, one_hot
from .recurrent import GRU, LSTM, RNN, Bidirectional, SimpleRNN, lengths_to_mask
from .version import __version__

__all__ = [
    "__version__", "fastpaths",
    "RNNCellBase", "SimpleRNNCell", "LSTMCell", "GRUCell",
    "RNN", "SimpleRNN", "LSTM", "GRU", "Bidirectional", "lengths_to_mask",
    "Embedding", "OneHot", "Dense", "Dropout", "Sequential", "one_hot", "clip_gradients",
    "from_torch", "to_torch", "set_keras_weights", "get_keras_weights",
]
