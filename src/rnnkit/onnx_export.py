"""Export rnnkit models to ONNX with the standard ``RNN`` / ``LSTM`` / ``GRU`` operators.

Each recurrent layer becomes one ONNX recurrent node (both directions of a
:class:`~rnnkit.recurrent.Bidirectional` in one ``direction="bidirectional"`` node), so batch
and time stay dynamic axes and a runtime runs its own fused kernel. The weights map as::

    W = kernel^T, R = recurrent_kernel^T                 per direction, gates reordered:
    LSTM  rnnkit i f c o  ->  ONNX i o f c;  B = [b, 0]
    GRU   z r h (same order), linear_before_reset = 1 (rnnkit's reset-after);  B = [b_x, b_h]
    RNN   activation Tanh or Relu;  B = [b, 0]

Masks: a model whose ``Embedding`` (or ``OneHot``) has ``mask_zero`` gets the ONNX
``sequence_lens`` input computed in the graph, ``len_b = sum_t (ids[b, t] != 0)``. ONNX
counts the real steps as a prefix (padding at the end); for ``padding="pre"`` (rnnkit's text
default) the graph first rotates each row left by its padding, which is exact because a
masked step leaves the state unchanged. A mask with holes (zeros between words) has no ONNX
equivalent and gives other outputs; so do options ONNX cannot express, which are refused by
name (:class:`ExportError`) rather than silently changed.

Exported: :class:`~rnnkit.layers.Sequential` models of ``Embedding``/``OneHot``, recurrent
layers, ``Bidirectional``, ``Dense`` and ``Dropout`` (the text classifiers, imported Keras
models), the tagger (word ids and, with its character CNN, character ids), the forecaster
(float windows), and one step of the language model with its state as explicit inputs and
outputs (``ids, h[, c] -> logits, h[, c]``) so a stateless runtime can generate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .cells import GRUCell, LSTMCell, SimpleRNNCell
from .errors import UserError
from .layers import Dense, Dropout, Embedding, OneHot, Sequential
from .recurrent import RNN, Bidirectional

OPSET = 17


class ExportError(UserError):
    """The model uses something the ONNX export cannot express (named in the message)."""


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise UserError("ONNX export needs onnx: pip install 'rnnkit[onnx]'") from None
    return onnx


class _Graph:
    """Nodes and initializers of one ONNX graph under construction."""

    def __init__(self) -> None:
        self.onnx = _onnx()
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, value: np.ndarray | list | float | int, base: str = "c",
              dtype: Any = None) -> str:
        arr = np.asarray(value, dtype=dtype)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        name = self.name(base)
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def op(self, kind: str, inputs: list[str], outputs: int = 1, **attrs: Any) -> list[str]:
        outs = [self.name(kind.lower()) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(kind, inputs, outs, **attrs))
        return outs

    def one(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        return self.op(kind, inputs, 1, **attrs)[0]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def _direction_weights(layer: RNN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``W (G*H, in)``, ``R (G*H, H)``, ``B (2*G*H,)`` of one rnnkit layer in ONNX's layout."""
    cell = layer.cell
    h = cell.units
    w, r = _np(cell.kernel).T, _np(cell.recurrent_kernel).T
    g = cell.gates
    if cell.bias is None:
        b = np.zeros(2 * g * h, np.float32)
    elif isinstance(cell, GRUCell):
        b = np.concatenate([_np(cell.bias[0]), _np(cell.bias[1])])
    else:
        b = np.concatenate([_np(cell.bias), np.zeros(g * h, np.float32)])
    if isinstance(cell, LSTMCell):  # i f c o -> i o f c
        order = [0, 3, 1, 2]

        def re(a: np.ndarray) -> np.ndarray:
            blocks = np.split(a, 4, axis=0)
            return np.concatenate([blocks[i] for i in order], axis=0)

        w, r = re(w), re(r)
        b = np.concatenate([re(b[:4 * h]), re(b[4 * h:])])
    return w, r, b


def _check_rnn(layer: RNN, where: str, state_ok: bool = False) -> None:
    if layer.return_state and not state_ok:
        raise ExportError(f"{where}: return_state inside a model is not exported")
    if not isinstance(layer.cell, (SimpleRNNCell, LSTMCell, GRUCell)):
        raise ExportError(f"{where}: cell {type(layer.cell).__name__} has no ONNX operator")


def _recurrent(g: _Graph, layer: RNN | Bidirectional, x_tbf: str, lens: str | None,
               where: str, init: list[str] | None = None
               ) -> tuple[str, str, str | None, int, int]:
    """One ONNX recurrent node: ``(Y (T, D, B, H), Y_h (D, B, H), Y_c or None, D, H)``."""
    if isinstance(layer, Bidirectional):
        fwd, bwd = layer.forward_layer, layer.backward_layer
        _check_rnn(fwd, where)
        _check_rnn(bwd, where)
        if type(fwd.cell) is not type(bwd.cell) or fwd.cell.units != bwd.cell.units or \
                getattr(fwd.cell, "activation", None) != getattr(bwd.cell, "activation", None):
            raise ExportError(f"{where}: the two directions differ in cell or size")
        if fwd.go_backwards or not bwd.go_backwards:
            raise ExportError(f"{where}: Bidirectional needs a forward and a go_backwards layer")
        parts = [_direction_weights(fwd), _direction_weights(bwd)]
        direction, cell = "bidirectional", fwd.cell
    else:
        _check_rnn(layer, where, state_ok=init is not None)
        parts = [_direction_weights(layer)]
        direction, cell = ("reverse" if layer.go_backwards else "forward"), layer.cell
    w = g.const(np.stack([p[0] for p in parts]), "W")
    r = g.const(np.stack([p[1] for p in parts]), "R")
    b = g.const(np.stack([p[2] for p in parts]), "B")
    h = cell.units
    attrs: dict[str, Any] = {"hidden_size": h, "direction": direction}
    ins = [x_tbf, w, r, b, lens or ""]
    if isinstance(cell, LSTMCell):
        kind, n_out = "LSTM", 3
        ins += init or []
    elif isinstance(cell, GRUCell):
        kind, n_out = "GRU", 2
        attrs["linear_before_reset"] = 1
        ins += init or []
    else:
        kind, n_out = "RNN", 2
        act = "Tanh" if cell.activation == "tanh" else "Relu"
        attrs["activations"] = [act] * len(parts)
        ins += init or []
    while ins and ins[-1] == "":
        ins.pop()
    outs = g.op(kind, ins, n_out, **attrs)
    return outs[0], outs[1], (outs[2] if n_out == 3 else None), len(parts), h


def _merge(g: _Graph, y: str, mode: str, d: int, h: int, seq: bool) -> str:
    """``(B, [T,] D, H)`` -> merged features ``(B, [T,] D*H)`` or ``(B, [T,] H)``."""
    axis = 2 if seq else 1
    if d == 1 or mode == "concat":
        shape = [0, 0, d * h] if seq else [0, d * h]
        return g.one("Reshape", [y, g.const(np.array(shape, np.int64))])
    fwd, bwd = g.op("Split", [y, g.const(np.array([1, 1], np.int64))], 2, axis=axis)
    fwd = g.one("Squeeze", [fwd, g.const(np.array([axis], np.int64))])
    bwd = g.one("Squeeze", [bwd, g.const(np.array([axis], np.int64))])
    if mode == "sum":
        return g.one("Add", [fwd, bwd])
    if mode == "mul":
        return g.one("Mul", [fwd, bwd])
    if mode == "ave":
        return g.one("Mul", [g.one("Add", [fwd, bwd]), g.const(np.float32(0.5))])
    raise ExportError(f"merge_mode {mode!r} is not exported")


def _rnn_block(g: _Graph, layer: RNN | Bidirectional, x_btf: str, lens: str | None,
               masked: bool, where: str) -> str:
    """An rnnkit recurrent layer on ``(B, T, F)``: its output ``(B, T, F')`` or ``(B, F')``."""
    seq = layer.return_sequences
    if isinstance(layer, RNN) and layer.go_backwards and seq and masked:
        raise ExportError(f"{where}: a go_backwards layer returning masked sequences (rnnkit "
                          "returns them in processing order, reversed padding included) is not "
                          "exported; wrap it in Bidirectional or return only the last state")
    x_tbf = g.one("Transpose", [x_btf], perm=[1, 0, 2])
    y, y_h, _, d, h = _recurrent(g, layer, x_tbf, lens, where)
    mode = layer.merge_mode if isinstance(layer, Bidirectional) else "concat"
    if seq:
        y = g.one("Transpose", [y], perm=[2, 0, 1, 3])  # (B, T, D, H)
        if isinstance(layer, RNN) and layer.go_backwards:  # processing order, unmasked
            y = g.one("Slice", [y, g.const(np.array([-1], np.int64)),
                                g.const(np.array([-(2**62)], np.int64)),
                                g.const(np.array([1], np.int64)),
                                g.const(np.array([-1], np.int64))])
        return _merge(g, y, mode, d, h, True)
    y_h = g.one("Transpose", [y_h], perm=[1, 0, 2])  # (B, D, H)
    return _merge(g, y_h, mode, d, h, False)


_ACT = {"sigmoid": "Sigmoid", "relu": "Relu", "tanh": "Tanh"}


def _dense(g: _Graph, layer: Dense, x: str, logits: bool = False) -> str:
    y = g.one("MatMul", [x, g.const(_np(layer.kernel), "kernel")])
    if layer.bias is not None:
        y = g.one("Add", [y, g.const(_np(layer.bias), "bias")])
    act = None if logits else layer.activation
    if act in (None, "linear"):
        return y
    if act == "softmax":
        return g.one("Softmax", [y], axis=-1)
    return g.one(_ACT[act], [y])


def _lengths(g: _Graph, ids: str) -> str:
    """``sum_t (ids != 0)`` as int32 ``(B,)``."""
    nz = g.one("Not", [g.one("Equal", [ids, g.const(np.int64(0))])])
    return g.one("Cast", [g.one("ReduceSum", [g.one("Cast", [nz], to=7),
                                              g.const(np.array([1], np.int64))], keepdims=0)],
                 to=6)


def _ids_embedding(g: _Graph, weight: torch.Tensor) -> tuple[list, str, str]:
    """The graph input ``ids (batch, time)`` int64, its lengths (:func:`_lengths`) and its
    embedding ``weight[ids]``: ``([input], lens, x)``."""
    onnx = g.onnx
    inp = onnx.helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["batch", "time"])
    lens = _lengths(g, "ids")
    return [inp], lens, g.one("Gather", [g.const(_np(weight), "embedding"), "ids"], axis=0)


def _left_align(g: _Graph, ids: str, lens: str) -> str:
    """Rotate each pre-padded row left by its padding: ``out[b, t] = ids[b, (t + T - len_b)
    mod T]`` (post-padded rows, exactly what ONNX's sequence_lens assumes)."""
    shape = g.one("Shape", [ids])
    t = g.one("Gather", [shape, g.const(np.int64(1))], axis=0)
    pos = g.one("Range", [g.const(np.int64(0)), t, g.const(np.int64(1))])  # (T,)
    shift = g.one("Sub", [t, g.one("Cast", [lens], to=7)])  # (B,)
    idx = g.one("Mod", [g.one("Add", [g.one("Unsqueeze", [pos, g.const(np.array([0], np.int64))]),
                                      g.one("Unsqueeze", [shift, g.const(np.array([1],
                                                                                  np.int64))])]),
                        t])
    return g.one("GatherElements", [ids, idx], axis=1)


def _sequential(g: _Graph, model: Sequential, ids: str, padding: str) -> tuple[str, int]:
    """The output of ``model`` on ``ids`` and its rank."""
    layers = list(model)
    first = layers[0] if layers else None
    lens, masked, x = None, False, ids
    if isinstance(first, (Embedding, OneHot)):
        masked = first.mask_zero
        if masked:
            lens = _lengths(g, ids)
            if padding == "pre":
                x = _left_align(g, ids, lens)
            elif padding != "post":
                raise ExportError(f"padding must be 'pre' or 'post', got {padding!r}")
        if isinstance(first, Embedding):
            x = g.one("Gather", [g.const(_np(first.weight), "embedding"), x], axis=0)
        else:
            x = g.one("Gather", [g.const(np.eye(first.num_classes, dtype=np.float32), "onehot"),
                                 x], axis=0)
        layers = layers[1:]
    rank = 3
    for i, layer in enumerate(layers, start=1):
        where = f"layer {i} ({type(layer).__name__})"
        if isinstance(layer, (RNN, Bidirectional)):
            if rank != 3:
                raise ExportError(f"{where}: a recurrent layer after the sequence ended")
            x = _rnn_block(g, layer, x, lens, masked, where)
            if not layer.return_sequences:
                masked, lens, rank = False, None, 2
            elif masked and padding == "pre" and i == len(layers):
                raise ExportError(f"{where}: a pre-padded model whose output is a sequence is "
                                  "not exported (use padding='post')")
        elif isinstance(layer, Dense):
            x = _dense(g, layer, x)
        elif isinstance(layer, Dropout):
            continue
        elif isinstance(layer, (Embedding, OneHot)):
            raise ExportError(f"{where}: an embedding after the first layer is not exported")
        else:
            raise ExportError(f"{where} has no ONNX export")
    return x, rank


def _model_proto(g: _Graph, inputs: list[Any], outputs: list[tuple[str, str, list]],
                 types: dict[str, int] | None = None) -> Any:
    """The checked ONNX model of ``g``; ``outputs`` are ``(public name, node output, shape)``,
    float unless ``types`` gives another element type for a public name."""
    onnx = g.onnx
    types = types or {}
    renamed = [onnx.helper.make_node("Identity", [name], [public]) for public, name, _ in outputs]
    outs = [onnx.helper.make_tensor_value_info(public, types.get(public, onnx.TensorProto.FLOAT),
                                               shape)
            for public, _, shape in outputs]
    graph = onnx.helper.make_graph(g.nodes + renamed, "rnnkit", inputs, outs, g.inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="rnnkit")
    onnx.checker.check_model(model)
    return model


def export_sequential(model: Sequential, padding: str = "pre") -> Any:
    """ONNX model ``ids (batch, time) int64 -> output`` of a Sequential text model, or
    ``x (batch, time, features) float`` when it does not start with an embedding."""
    g = _Graph()
    onnx = g.onnx
    model.eval()
    first = model[0]
    if isinstance(first, (Embedding, OneHot)):
        inp = onnx.helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["batch", "time"])
        name = "ids"
    else:
        inp = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                 ["batch", "time", "features"])
        name = "x"
    y, rank = _sequential(g, model, name, padding)
    return _model_proto(g, [inp], [("output", y, ["batch", "time", "out"][:rank - 1] + ["out"])])


def export_tagger(model: nn.Module) -> Any:
    """ONNX of a :class:`~rnnkit.tasks.tagging.SequenceTaggerModel`: ``ids (B, T)`` [and
    ``chars (B, T, C)``] -> logits ``(B, T, tags)`` (post-padded sentences; a CRF's Viterbi
    decoding stays outside: take its transitions from the model directory)."""
    g = _Graph()
    onnx = g.onnx
    model.eval()
    inputs, lens, x = _ids_embedding(g, model.embedding.weight)
    if model.char_conv is not None:
        inputs.append(onnx.helper.make_tensor_value_info("chars", onnx.TensorProto.INT64,
                                                         ["batch", "time", "chars"]))
        shape = g.one("Shape", ["chars"])
        flat = g.one("Reshape", ["chars", g.one("Concat", [
            g.const(np.array([-1], np.int64)),
            g.one("Slice", [shape, g.const(np.array([2], np.int64)),
                            g.const(np.array([3], np.int64))])], axis=0)])
        e = g.one("Gather", [g.const(_np(model.char_embedding.weight), "char_embedding"), flat],
                  axis=0)  # (BT, C, E)
        e = g.one("Transpose", [e], perm=[0, 2, 1])
        conv = model.char_conv
        h = g.one("Conv", [e, g.const(_np(conv.weight), "conv_w"), g.const(_np(conv.bias),
                                                                          "conv_b")],
                  pads=[1, 1], kernel_shape=[3])
        h = g.one("Relu", [h])
        pad = g.one("Unsqueeze", [g.one("Equal", [flat, g.const(np.int64(0))]),
                                  g.const(np.array([1], np.int64))])
        h = g.one("Where", [pad, g.const(np.float32(0.0)), h])
        h = g.one("ReduceMax", [h], axes=[2], keepdims=0)  # (BT, F)
        bt = g.one("Slice", [shape, g.const(np.array([0], np.int64)),
                             g.const(np.array([2], np.int64))])
        h = g.one("Reshape", [h, g.one("Concat", [bt, g.const(np.array([-1], np.int64))],
                                       axis=0)])
        x = g.one("Concat", [x, h], axis=-1)
    for i, layer in enumerate(model.rnns, start=1):
        x = _rnn_block(g, layer, x, lens, True, f"recurrent layer {i}")
    y = _dense(g, model.out, x, logits=True)
    return _model_proto(g, inputs, [("logits", y, ["batch", "time", "tags"])])


def export_forecaster(model: nn.Module) -> Any:
    """ONNX of a :class:`~rnnkit.tasks.forecast.ForecastModel`: scaled windows
    ``x (B, lookback, features)`` -> ``(B, horizon, targets[, quantiles])`` (the scaling and
    the level are applied outside, as ``Forecaster`` does; see forecast.json)."""
    g = _Graph()
    onnx = g.onnx
    model.eval()
    inp = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                             ["batch", "lookback", "features"])
    x = "x"
    for i, layer in enumerate(model.rnns, start=1):
        x = _rnn_block(g, layer, x, None, False, f"recurrent layer {i}")
    y = _dense(g, model.out, x)
    cfg = model.cfg
    shape = [0, cfg["horizon"], cfg["targets"]] + ([model.q] if model.q else [])
    y = g.one("Reshape", [y, g.const(np.array(shape, np.int64))])
    return _model_proto(g, [inp], [("forecast", y, ["batch"] + shape[1:])])


def export_lm_step(model: nn.Module) -> Any:
    """ONNX of a :class:`~rnnkit.tasks.generate.LanguageModel` with its state explicit:
    ``ids (B, T), h (B, H)[, c (B, H)] -> logits (B, T, V), h_out[, c_out]`` (zeros for the
    first call; feed the outputs back to generate one token at a time)."""
    g = _Graph()
    onnx = g.onnx
    model.eval()
    rnn = model.rnn
    lstm = isinstance(rnn.cell, LSTMCell)
    h = rnn.cell.units
    f = onnx.TensorProto.FLOAT
    inputs = [onnx.helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["batch", "time"]),
              onnx.helper.make_tensor_value_info("h", f, ["batch", h])]
    if lstm:
        inputs.append(onnx.helper.make_tensor_value_info("c", f, ["batch", h]))
    x = g.one("Gather", [g.const(_np(model.embed.weight), "embedding"), "ids"], axis=0)
    x = g.one("Transpose", [x], perm=[1, 0, 2])
    zero = g.const(np.array([0], np.int64))
    init = [g.one("Unsqueeze", ["h", zero])] + ([g.one("Unsqueeze", ["c", zero])] if lstm else [])
    y, y_h, y_c, _, _ = _recurrent(g, rnn, x, None, "recurrent layer", init)
    seq = g.one("Transpose", [g.one("Squeeze", [y, g.const(np.array([1], np.int64))])],
                perm=[1, 0, 2])
    logits = _dense(g, model.out, seq, logits=True)
    outs = [("logits", logits, ["batch", "time", "vocab"]),
            ("h_out", g.one("Squeeze", [y_h, zero]), ["batch", h])]
    if lstm:
        assert y_c is not None
        outs.append(("c_out", g.one("Squeeze", [y_c, zero]), ["batch", h]))
    return _model_proto(g, inputs, outs)


# -- seq2seq: the encoder and one decoder step ------------------------------------------------
def _const_i64(g: _Graph, values: list[int]) -> str:
    return g.const(np.array(values, np.int64))


def _attend(g: _Graph, att: nn.Module, q: str, enc: str, mask: str) -> str:
    """Context ``(B, T, H)`` of Luong or Bahdanau attention of queries ``q (B, T, Dq)`` over
    ``enc (B, S, H)`` with ``mask (B, S)`` bool (the model's equations)."""
    from .tasks.seq2seq import BahdanauAttention

    if isinstance(att, BahdanauAttention):
        wq = g.one("Unsqueeze", [g.one("MatMul", [q, g.const(_np(att.w_q.kernel))]),
                                 _const_i64(g, [2])])  # (B, T, 1, U)
        wk = g.one("MatMul", [enc, g.const(_np(att.w_k.kernel))])
        if att.w_k.bias is not None:
            wk = g.one("Add", [wk, g.const(_np(att.w_k.bias))])
        wk = g.one("Unsqueeze", [wk, _const_i64(g, [1])])  # (B, 1, S, U)
        hidden = g.one("Tanh", [g.one("Add", [wq, wk])])
        scores = g.one("Squeeze", [g.one("MatMul", [hidden, g.const(_np(att.v.kernel))]),
                                   _const_i64(g, [3])])  # (B, T, S)
    else:
        qa = g.one("MatMul", [q, g.const(_np(att.w_a.kernel))])
        scores = g.one("MatMul", [qa, g.one("Transpose", [enc], perm=[0, 2, 1])])
    keep = g.one("Unsqueeze", [mask, _const_i64(g, [1])])
    low = g.const(np.float32(np.finfo(np.float32).min))
    weights = g.one("Softmax", [g.one("Where", [keep, scores, low])], axis=-1)
    return g.one("MatMul", [weights, enc])


def export_seq2seq(model: nn.Module) -> tuple[Any, Any]:
    """ONNX of a :class:`~rnnkit.tasks.seq2seq.Seq2Seq` as two graphs:

    * encoder: ``src (B, S)`` int64, post-padded with 0 -> ``enc_out (B, S, H)``,
      ``src_mask (B, S)`` bool, ``h (B, H)`` [, ``c``];
    * one decoder step: ``y_prev (B,)`` int64 (1, the start id, first), ``h`` [, ``c``],
      ``enc_out``, ``src_mask`` -> ``logits (B, V)``, ``h_out`` [, ``c_out``].

    Greedy decoding: feed the argmax back as ``y_prev`` with the new state until ``<end>``
    (id 3); beam search keeps several states."""
    g = _Graph()
    onnx = g.onnx
    model.eval()
    lstm = isinstance(model.encoder.cell, LSTMCell)
    h_dim = model.units
    f, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    src = onnx.helper.make_tensor_value_info("src", i64, ["batch", "src_len"])
    lens = _lengths(g, "src")
    x = g.one("Gather", [g.const(_np(model.src_embed.weight), "src_embedding"), "src"], axis=0)
    x = g.one("Transpose", [x], perm=[1, 0, 2])
    y, y_h, y_c, _, _ = _recurrent(g, model.encoder, x, lens, "encoder", init=[])
    zero = _const_i64(g, [0])
    enc = g.one("Transpose", [g.one("Squeeze", [y, _const_i64(g, [1])])], perm=[1, 0, 2])
    mask = g.one("Not", [g.one("Equal", ["src", g.const(np.int64(0))])])
    outs = [("enc_out", enc, ["batch", "src_len", h_dim]), ("h", g.one("Squeeze", [y_h, zero]),
                                                            ["batch", h_dim])]
    if lstm:
        assert y_c is not None
        outs.append(("c", g.one("Squeeze", [y_c, zero]), ["batch", h_dim]))
    enc_out_names = [("src_mask", mask)]
    nodes_out = outs + [(n, v, ["batch", "src_len"]) for n, v in enc_out_names]
    encoder = _model_proto(g, [src], nodes_out, {"src_mask": onnx.TensorProto.BOOL})

    g = _Graph()
    inputs = [onnx.helper.make_tensor_value_info("y_prev", i64, ["batch"]),
              onnx.helper.make_tensor_value_info("h", f, ["batch", h_dim])]
    if lstm:
        inputs.append(onnx.helper.make_tensor_value_info("c", f, ["batch", h_dim]))
    inputs += [onnx.helper.make_tensor_value_info("enc_out", f, ["batch", "src_len", h_dim]),
               onnx.helper.make_tensor_value_info("src_mask", onnx.TensorProto.BOOL,
                                                  ["batch", "src_len"])]
    zero = _const_i64(g, [0])
    one = _const_i64(g, [1])
    emb = g.one("Gather", [g.const(_np(model.tgt_embed.weight), "tgt_embedding"),
                           g.one("Unsqueeze", ["y_prev", one])], axis=0)  # (B, 1, E)
    if model.attention_kind == "bahdanau":
        ctx = _attend(g, model.attention, g.one("Unsqueeze", ["h", one]), "enc_out",
                      "src_mask")
        emb = g.one("Concat", [emb, ctx], axis=-1)
    init = [g.one("Unsqueeze", ["h", zero])] + ([g.one("Unsqueeze", ["c", zero])] if lstm
                                                 else [])
    y, y_h, y_c, _, _ = _recurrent(g, model.decoder, g.one("Transpose", [emb], perm=[1, 0, 2]),
                                   None, "decoder", init)
    h_t = g.one("Transpose", [g.one("Squeeze", [y, one])], perm=[1, 0, 2])  # (B, 1, H)
    if model.attention_kind == "luong":
        ctx = _attend(g, model.attention, h_t, "enc_out", "src_mask")
        h_t = _dense(g, model.combine, g.one("Concat", [ctx, h_t], axis=-1))
    logits = g.one("Squeeze", [_dense(g, model.out, h_t, logits=True), one])
    outs = [("logits", logits, ["batch", "vocab"]),
            ("h_out", g.one("Squeeze", [y_h, zero]), ["batch", h_dim])]
    if lstm:
        assert y_c is not None
        outs.append(("c_out", g.one("Squeeze", [y_c, zero]), ["batch", h_dim]))
    return encoder, _model_proto(g, inputs, outs)


# -- series classification and the siamese encoder --------------------------------------------
def _length_mask(g: _Graph, x: str, lengths: str) -> str:
    """``(B, T)`` bool: step ``t < lengths[b]`` of ``x (B, T, ...)``."""
    t = g.one("Gather", [g.one("Shape", [x]), g.const(np.int64(1))], axis=0)
    pos = g.one("Unsqueeze", [g.one("Range", [g.const(np.int64(0)), t, g.const(np.int64(1))]),
                              _const_i64(g, [0])])
    return g.one("Less", [pos, g.one("Unsqueeze", [lengths, _const_i64(g, [1])])])


def export_series(model: nn.Module) -> Any:
    """ONNX of a :class:`~rnnkit.tasks.series.SeriesNet`: ``x (B, T, C)`` float padded at the
    end with ``lengths (B,)`` int64 -> class logits ``(B, classes)`` (standardisation,
    masked recurrence and the masked convolutional branch inside the graph)."""
    g = _Graph()
    onnx = g.onnx
    model.eval()
    f = onnx.TensorProto.FLOAT
    inputs = [onnx.helper.make_tensor_value_info("x", f, ["batch", "time", model.cfg["channels"]]),
              onnx.helper.make_tensor_value_info("lengths", onnx.TensorProto.INT64, ["batch"])]
    mask = _length_mask(g, "x", "lengths")
    m3 = g.one("Cast", [g.one("Unsqueeze", [mask, _const_i64(g, [2])])], to=f)  # (B, T, 1)
    if model.cfg["normalize"] == "series":
        one = _const_i64(g, [1])
        n = g.one("Max", [g.one("ReduceSum", [m3, one], keepdims=1), g.const(np.float32(1.0))])
        mu = g.one("Div", [g.one("ReduceSum", [g.one("Mul", ["x", m3]), one], keepdims=1), n])
        dev = g.one("Mul", [g.one("Sub", ["x", mu]), m3])
        var = g.one("Div", [g.one("ReduceSum", [g.one("Mul", [dev, dev]), one], keepdims=1), n])
        sd = g.one("Max", [g.one("Sqrt", [var]), g.const(np.float32(1e-6))])
        z = g.one("Mul", [g.one("Div", [g.one("Sub", ["x", mu]), sd]), m3])
    else:
        z = g.one("Mul", [g.one("Div", [g.one("Sub", ["x", g.const(_np(model.mean))]),
                                        g.const(_np(model.std))]), m3])
    lens = g.one("Cast", ["lengths"], to=6)
    feats = [_rnn_block(g, model.rnn, z, lens, True, "recurrent layer")]
    if model.fcn is not None:
        h = g.one("Transpose", [z], perm=[0, 2, 1])  # (B, C, T)
        m = g.one("Transpose", [m3], perm=[0, 2, 1])  # (B, 1, T)
        for conv, bn in zip(model.fcn[0::2], model.fcn[1::2], strict=True):
            k = conv.kernel_size[0]
            h = g.one("Pad", [h, _const_i64(g, [0, 0, (k - 1) // 2, 0, 0, k // 2])])
            h = g.one("Conv", [h, g.const(_np(conv.weight)), g.const(_np(conv.bias))],
                      kernel_shape=[k])
            h = g.one("BatchNormalization", [h, g.const(_np(bn.weight)), g.const(_np(bn.bias)),
                                             g.const(_np(bn.running_mean)),
                                             g.const(_np(bn.running_var))], epsilon=bn.eps)
            h = g.one("Mul", [g.one("Relu", [h]), m])
        two = _const_i64(g, [2])
        pooled = g.one("Div", [g.one("ReduceSum", [h, two], keepdims=0),
                               g.one("Max", [g.one("ReduceSum", [m, two], keepdims=0),
                                             g.const(np.float32(1.0))])])
        feats.append(pooled)
    x = g.one("Concat", feats, axis=-1) if len(feats) > 1 else feats[0]
    return _model_proto(g, inputs, [("logits", _dense(g, model.out, x, logits=True),
                                     ["batch", model.cfg["classes"]])])


def export_siamese(model: nn.Module) -> Any:
    """ONNX of a :class:`~rnnkit.tasks.siamese.SiameseEncoder`: ``ids (B, T)`` post-padded
    -> the embedding ``(B, out_dim)``; the similarity of two texts is the cosine of their
    embeddings."""
    g = _Graph()
    onnx = g.onnx
    model.eval()
    inputs, lens, x = _ids_embedding(g, model.embed.weight)
    h = _rnn_block(g, model.rnn, x, lens, True, "recurrent layer")
    if model.pooling == "meanmax":
        keep = g.one("Unsqueeze", [g.one("Not", [g.one("Equal", ["ids", g.const(np.int64(0))])]),
                                   _const_i64(g, [2])])
        m = g.one("Cast", [keep], to=onnx.TensorProto.FLOAT)
        one = _const_i64(g, [1])
        mean = g.one("Div", [g.one("ReduceSum", [g.one("Mul", [h, m]), one], keepdims=0),
                             g.one("Max", [g.one("ReduceSum", [m, one], keepdims=0),
                                           g.const(np.float32(1.0))])])
        low = g.const(np.float32(np.finfo(np.float32).min))
        mx = g.one("ReduceMax", [g.one("Where", [keep, h, low])], axes=[1], keepdims=0)
        h = g.one("Concat", [mean, mx], axis=-1)
    return _model_proto(g, inputs, [("embedding", _dense(g, model.proj, h),
                                     ["batch", model.out_dim])])
