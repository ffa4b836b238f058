"""ONNX export held to rnnkit by onnxruntime: every cell, direction, stacking and merge,
masked pre- and post-padded batches of mixed lengths, the tagger (with its character CNN),
the forecaster and the language-model step with explicit state; what ONNX cannot express
is an error naming it."""

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from rnnkit.layers import Dense, Dropout, Embedding, OneHot, Sequential  # noqa: E402
from rnnkit.onnx_export import (  # noqa: E402
    ExportError,
    export_forecaster,
    export_lm_step,
    export_sequential,
    export_tagger,
)
from rnnkit.recurrent import GRU, LSTM, Bidirectional, SimpleRNN  # noqa: E402


def _run(proto, **feeds):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _ids(padding: str, batch: int = 7, time: int = 11, vocab: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, vocab, (batch, time))
    for i, n in enumerate([11, 6, 1, 9, 3, 11, 4][:batch]):
        if padding == "post":
            x[i, n:] = 0
        else:
            x[i, :time - n] = 0
    return x


CELLS = {"simple": lambda u, **k: SimpleRNN(u, **k),
         "relu": lambda u, **k: SimpleRNN(u, activation="relu", **k),
         "lstm": lambda u, **k: LSTM(u, **k), "gru": lambda u, **k: GRU(u, **k)}


@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("shape", ["single", "bidirectional", "stacked", "bi-sum"])
def test_sequential_classifier_parity(cell, shape, padding):
    torch.manual_seed(0)
    make = CELLS[cell]
    if shape == "single":
        rnns = [make(6)]
    elif shape == "bidirectional":
        rnns = [Bidirectional(make(5))]
    elif shape == "stacked":
        rnns = [make(5, return_sequences=True), Dropout(0.2), make(4)]
    else:
        rnns = [Bidirectional(make(5, return_sequences=True), merge_mode="sum"),
                Bidirectional(make(3), merge_mode="ave")]
    model = Sequential(Embedding(40, 8, mask_zero=True), *rnns, Dense(3, "softmax"),
                       input_shape=(11,)).eval()
    x = _ids(padding)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    (got,) = _run(export_sequential(model, padding=padding), ids=x)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    x2 = _ids(padding, batch=3, time=5, seed=1)  # other batch and time: dynamic axes
    x2[:, -1 if padding == "post" else 0] = 0
    with torch.no_grad():
        want2 = model(torch.from_numpy(x2)).numpy()
    np.testing.assert_allclose(_run(export_sequential(model, padding=padding), ids=x2)[0],
                               want2, atol=1e-5, rtol=1e-5)


def test_unmasked_onehot_and_go_backwards():
    torch.manual_seed(1)
    model = Sequential(OneHot(20), SimpleRNN(4, go_backwards=True, return_sequences=True),
                       GRU(3), Dense(1, "sigmoid"), input_shape=(9,)).eval()
    x = np.random.default_rng(2).integers(0, 20, (5, 9))
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(export_sequential(model), ids=x)[0], want, atol=1e-5)


def test_tagger_parity_with_character_cnn():
    from rnnkit.tasks.tagging import SequenceTaggerModel

    torch.manual_seed(3)
    model = SequenceTaggerModel(30, 6, embed_dim=8, units=5, char_vocab=12, char_filters=7,
                                layers=2).eval()
    ids = _ids("post", vocab=30)
    rng = np.random.default_rng(4)
    chars = rng.integers(1, 12, (7, 11, 4))
    chars[ids == 0] = 0
    chars[:, :, 3] = 0  # short words
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(chars)).numpy()
    (got,) = _run(export_tagger(model), ids=ids, chars=chars)
    real = ids != 0
    np.testing.assert_allclose(got[real], want[real], atol=1e-5, rtol=1e-5)


def test_forecaster_parity():
    from rnnkit.tasks.forecast import ForecastModel

    torch.manual_seed(5)
    for q in (None, [0.1, 0.5, 0.9]):
        model = ForecastModel(3, 2, horizon=4, units=6, cell="gru", layers=2, quantiles=q).eval()
        x = np.random.default_rng(6).normal(size=(5, 10, 3)).astype(np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(_run(export_forecaster(model), x=x)[0], want, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_language_model_step_with_explicit_state(cell):
    from rnnkit.tasks.generate import LanguageModel

    torch.manual_seed(7)
    model = LanguageModel(25, embed_dim=6, units=8, cell=cell).eval()
    proto = export_lm_step(model)
    ids = np.random.default_rng(8).integers(0, 25, (2, 6))
    with torch.no_grad():
        want, state = model(torch.from_numpy(ids))
        # one more token from the returned state, as a generator does
        nxt, state2 = model(torch.from_numpy(ids[:, :1]), state)
    zeros = np.zeros((2, 8), np.float32)
    feeds = {"ids": ids, "h": zeros} | ({"c": zeros} if cell == "lstm" else {})
    out = _run(proto, **feeds)
    np.testing.assert_allclose(out[0], want.numpy(), atol=1e-5, rtol=1e-5)
    feeds = {"ids": ids[:, :1], "h": out[1]} | ({"c": out[2]} if cell == "lstm" else {})
    out2 = _run(proto, **feeds)
    np.testing.assert_allclose(out2[0], nxt.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out2[1], state2[0].numpy(), atol=1e-5, rtol=1e-5)


def test_what_onnx_cannot_express_is_named():
    torch.manual_seed(9)
    back = Sequential(Embedding(10, 4, mask_zero=True),
                      SimpleRNN(3, go_backwards=True, return_sequences=True), LSTM(2),
                      input_shape=(5,))
    with pytest.raises(ExportError, match="go_backwards"):
        export_sequential(back, padding="post")
    seq_out = Sequential(Embedding(10, 4, mask_zero=True), GRU(3, return_sequences=True),
                         input_shape=(5,))
    with pytest.raises(ExportError, match="pre-padded"):
        export_sequential(seq_out, padding="pre")


def test_cli_export_text_model_matches_predict(tmp_path, capsys):
    """rnnkit export on a trained text classifier: the ONNX graph on the encoder's ids gives
    the probabilities rnnkit predicts; the sidecar JSON carries labels and text settings;
    a task it cannot export is a one-line error."""
    import json
    from pathlib import Path

    from rnnkit.cli import main
    from rnnkit.tasks.classify import TextClassifier

    fix = Path(__file__).parent / "fixtures"
    m = tmp_path / "spam"
    assert main(["train", "text", "--file", str(fix / "sms_spam_tiny.tsv"), "--epochs", "1",
                 "--mask", "--out", str(m), "--quiet"]) == 0
    out = tmp_path / "spam.onnx"
    assert main(["export", str(m), "--format", "onnx", "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["inputs"] == ["ids"] and res["outputs"] == ["output"]
    side = json.loads(Path(f"{out}.json").read_text())
    assert side["config"]["labels"] and side["text"]["padding"] == side["padding"] == "pre"
    clf = TextClassifier.load(m)
    texts = ["WIN a free prize now, call!", "see you at lunch", "ok"]
    ids = clf.encoder.encode(texts).numpy()
    (got,) = _run(__import__("onnx").load(str(out)), ids=ids)
    np.testing.assert_allclose(got[:, 0], clf.predict_proba(texts)[:, 1], atol=1e-5)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"a {i}\tb {i}\n" for i in range(20)))
    assert main(["train", "seq2seq", "--file", str(pairs), "--epochs", "1", "--units", "4",
                 "--level", "word", "--out", str(tmp_path / "s2s"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["export", str(tmp_path / "s2s"), "--out", str(tmp_path / "s.onnx")]) == 0
    side = json.loads(Path(tmp_path / "s.onnx.json").read_text())
    assert (tmp_path / side["decoder"]["onnx"]).is_file()
    assert [i["name"] for i in side["decoder"]["inputs"]][:2] == ["y_prev", "h"]
    tsf = tmp_path / "m.tsf"
    tsf.write_text("@relation t\n@attribute series_name string\n@attribute start_timestamp "
                   "date\n@frequency yearly\n@horizon 2\n@missing false\n@equallength false\n"
                   "@data\n" + "".join(f"s{i}:2000-01-01 00-00-00:" + ",".join(
                       str(10 + i + j) for j in range(14)) + "\n" for i in range(6)))
    assert main(["train", "forecast", "--file", str(tsf), "--epochs", "1", "--out",
                 str(tmp_path / "g"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["export", str(tmp_path / "g"), "--out", str(tmp_path / "g.onnx")]) == 0
    assert json.loads(Path(f"{tmp_path / 'g.onnx'}.json").read_text())["task"] == \
        "forecast_global"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("attention", [None, "luong", "bahdanau"])
def test_seq2seq_encoder_and_decoder_steps(cell, attention):
    from rnnkit.onnx_export import export_seq2seq
    from rnnkit.tasks.seq2seq import Seq2Seq

    torch.manual_seed(11)
    model = Seq2Seq(30, 25, embed_dim=6, units=8, cell=cell, attention=attention).eval()
    src = _ids("post", batch=5, time=7, vocab=30)
    enc, dec = export_seq2seq(model)
    got = dict(zip(["enc_out", "h", "c", "src_mask"] if cell == "lstm" else
                   ["enc_out", "h", "src_mask"], _run(enc, src=src), strict=True))
    with torch.no_grad():
        enc_out, mask, state = model.encode(torch.from_numpy(src))
    real = src != 0
    np.testing.assert_allclose(got["enc_out"][real], enc_out.numpy()[real], atol=1e-5)
    np.testing.assert_allclose(got["h"], state[0].numpy(), atol=1e-5)
    assert (got["src_mask"] == mask.numpy()).all()
    y = np.ones(5, np.int64)  # the start id
    st = {"h": got["h"]} | ({"c": got["c"]} if cell == "lstm" else {})
    for _ in range(4):  # greedy steps: the same logits and states as rnnkit's decode_step
        out = _run(dec, y_prev=y, enc_out=got["enc_out"], src_mask=got["src_mask"], **st)
        with torch.no_grad():
            logits, state = model.decode_step(torch.from_numpy(y), state, enc_out, mask)
        np.testing.assert_allclose(out[0], logits.numpy(), atol=1e-5, rtol=1e-5)
        st = {"h": out[1]} | ({"c": out[2]} if cell == "lstm" else {})
        y = out[0][:, 2:].argmax(-1).astype(np.int64) + 2


@pytest.mark.parametrize("normalize", ["channel", "series"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_series_classifier_parity_variable_lengths(normalize, bidirectional):
    from rnnkit.onnx_export import export_series
    from rnnkit.tasks.forecast import pad_series
    from rnnkit.tasks.series import SeriesNet

    torch.manual_seed(12)
    model = SeriesNet(3, 4, units=5, filters=6, bidirectional=bidirectional,
                      normalize=normalize)
    with torch.no_grad():
        model.mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        model.std.copy_(torch.tensor([1.5, 0.7, 2.0]))
        for bn in model.fcn[1::2]:
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    rng = np.random.default_rng(13)
    series = [rng.normal(size=(n, 3)).astype(np.float32) for n in (20, 9, 14, 3)]
    x, lengths = pad_series(series)
    with torch.no_grad():
        want = model(x, lengths).numpy()
    got = _run(export_series(model), x=x.numpy(), lengths=lengths.numpy())[0]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["last", "meanmax"])
def test_siamese_encoder_parity(pooling):
    from rnnkit.onnx_export import export_siamese
    from rnnkit.tasks.siamese import SiameseEncoder

    torch.manual_seed(14)
    model = SiameseEncoder(30, embed_dim=6, units=5, out_dim=4, cell="gru",
                           pooling=pooling).eval()
    ids = _ids("post", vocab=30)
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(_run(export_siamese(model), ids=ids)[0], want, atol=1e-5)
