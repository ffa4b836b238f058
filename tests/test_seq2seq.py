"""Encoder-decoder translation: data errors, attention against torch's SDPA, teacher forcing
equals step-by-step decoding, beam search, learning on a small Tatoeba-format fixture."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from rnnkit.errors import UserError
from rnnkit.tasks.seq2seq import (
    BahdanauAttention,
    LuongAttention,
    Seq2Seq,
    Translator,
    beam_decode,
    evaluate_translator,
    greedy_decode,
    read_pairs,
    train_translator,
)

FIXTURE = Path(__file__).parent / "fixtures" / "pairs_en_fr.tsv"


pytestmark = pytest.mark.usefixtures("one_thread")


def test_read_pairs_fixture_format():
    pairs = read_pairs(FIXTURE)
    assert len(pairs) == 120
    assert pairs[0] == ("I see the cat.", "Je vois le chat.")  # attribution column dropped


@pytest.mark.parametrize("content, line, words", [
    ("a\tb\tattr\nno tab here\n", 2, "no tab"),
    ("a\tb\n\n# comment\n\tb\n", 4, "empty source"),
    ("a\t \n", 1, "empty target"),
])
def test_read_pairs_errors_name_file_and_line(tmp_path, content, line, words):
    p = tmp_path / "bad.tsv"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=rf"bad.tsv:{line}: .*{words}"):
        read_pairs(p)


def test_read_pairs_non_utf8_and_missing(tmp_path):
    p = tmp_path / "latin1.tsv"
    p.write_bytes(b"ok\tfine\ncaf\xe9\tx\n")
    with pytest.raises(UserError, match=r"latin1.tsv:2: not UTF-8"):
        read_pairs(p)
    with pytest.raises(UserError, match="not found"):
        read_pairs(tmp_path / "nope.tsv")
    (tmp_path / "empty.tsv").write_text("\n# only a comment\n")
    with pytest.raises(UserError, match="no sentence pairs"):
        read_pairs(tmp_path / "empty.tsv")


def test_luong_attention_matches_torch_sdpa():
    torch.manual_seed(0)
    att = LuongAttention(6, 5).double()
    q, k = torch.randn(3, 4, 6, dtype=torch.float64), torch.randn(3, 7, 5, dtype=torch.float64)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 2:] = False
    ctx, w = att(q, k, mask)
    oracle = torch.nn.functional.scaled_dot_product_attention(
        att.w_a(q), k, k, attn_mask=mask[:, None, :], scale=1.0)
    torch.testing.assert_close(ctx, oracle)
    assert torch.all(w[1, :, 5:] == 0) and torch.all(w[2, :, 2:] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, dtype=torch.float64))


def test_bahdanau_attention_weights_and_gradients():
    torch.manual_seed(0)
    att = BahdanauAttention(4, 3, 5).double()
    q = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    ctx, w = att(q, k, mask)
    # explicit formula: v^T tanh(W_q q + W_k k), softmax over real keys only
    s = (torch.tanh((q @ att.w_q.kernel)[:, :, None] + (k @ att.w_k.kernel + att.w_k.bias)
                    [:, None]) @ att.v.kernel).squeeze(-1)
    s = s.masked_fill(~mask[:, None], float("-inf"))
    torch.testing.assert_close(w, torch.softmax(s, -1))
    torch.testing.assert_close(ctx, torch.softmax(s, -1) @ k)
    assert torch.autograd.gradcheck(lambda a, b: att(a, b, mask)[0], (q, k))


@pytest.mark.parametrize("attention", [None, "luong", "bahdanau"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_teacher_forcing_equals_step_by_step(attention, cell):
    torch.manual_seed(1)
    m = Seq2Seq(9, 11, embed_dim=4, units=6, cell=cell, attention=attention).eval()
    src = torch.tensor([[4, 5, 6, 7], [8, 3, 0, 0]])
    tgt_in = torch.tensor([[1, 4, 5, 6, 7], [1, 9, 10, 3, 4]])
    with torch.no_grad():
        full = m(src, tgt_in)
        enc_out, mask, state = m.encode(src)
        steps = []
        for t in range(tgt_in.shape[1]):
            logits, state = m.decode_step(tgt_in[:, t], state, enc_out, mask)
            steps.append(logits)
    torch.testing.assert_close(full, torch.stack(steps, 1))
    # source padding is masked: the padded sentence alone gives the same logits
    with torch.no_grad():
        alone = m(src[1:, :2], tgt_in[1:])
    torch.testing.assert_close(full[1:], alone)


def test_decoder_starts_from_encoder_final_state():
    torch.manual_seed(2)
    m = Seq2Seq(9, 11, embed_dim=4, units=6, cell="lstm").eval()
    src = torch.tensor([[4, 5, 6]])
    with torch.no_grad():
        _, _, (h, c) = m.encode(src)
        dec = m.decoder(m.tgt_embed(torch.tensor([[1]])), initial_state=(h, c))[0]
        torch.testing.assert_close(m(src, torch.tensor([[1]])), m.out.logits(dec))
        other = m(torch.tensor([[7, 8, 4]]), torch.tensor([[1]]))
    assert not torch.allclose(other, m.out.logits(dec))


@pytest.mark.parametrize("attention", [None, "bahdanau"])
def test_beam_width_one_is_greedy(attention):
    torch.manual_seed(3)
    m = Seq2Seq(9, 11, embed_dim=4, units=6, attention=attention).eval()
    src = torch.tensor([[4, 5, 6, 7], [8, 3, 0, 0], [6, 6, 6, 0]])
    assert beam_decode(m, src, 8, beam_width=1) == greedy_decode(m, src, 8)
    wide = beam_decode(m, src, 8, beam_width=4)
    assert all(len(r) <= 8 and all(t >= 2 for t in r) for r in wide)


@pytest.fixture(scope="module")
def trained():
    pairs = read_pairs(FIXTURE)
    random.Random(0).shuffle(pairs)
    train, test = pairs[:96], pairs[96:]
    tr, hist = train_translator(train, val_pairs=test, attention="luong", units=32,
                                embed_dim=16, epochs=25, batch_size=16, lr=1e-2, seed=0,
                                level="word", select_by="loss")
    return tr, hist, train, test


def test_subword_translator_writes_cased_detokenised_text_and_round_trips(tmp_path):
    """The default level: sentencepiece per side, case kept; translations are text as
    written (capital first letter, no space before the full stop) scored against the raw
    reference; both sentencepiece models are saved, checked and reloaded."""
    pairs = read_pairs(FIXTURE)
    random.Random(0).shuffle(pairs)
    tr, hist = train_translator(pairs[:96], val_pairs=pairs[96:], units=32, embed_dim=16,
                                epochs=25, batch_size=16, lr=1e-2, seed=0, subword_vocab=60)
    assert tr.level == "subword" and "val_bleu" in hist
    out = tr.translate([s for s, _ in pairs[:96]])
    ev = evaluate_translator(tr, pairs[:96])
    assert ev["bleu"] > 50 > ev["baseline_bleu"]
    assert sum(o[:1].isupper() and o.endswith(".") and " ." not in o for o in out) > 80
    assert tr.reference_text("Il  voit le chat.") == "Il voit le chat."
    tr.save(tmp_path / "m")
    back = Translator.load(tmp_path / "m")
    assert back.translate([s for s, _ in pairs[:8]]) == out[:8]
    (tmp_path / "m" / "target_sentencepiece.model").write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match="sha256"):
        Translator.load(tmp_path / "m")


def test_translator_learns_and_beats_constant_baseline(trained):
    tr, hist, train, test = trained
    assert hist["loss"][-1] < 0.25 * hist["loss"][0]
    assert hist["val_loss"][-1] < 0.5 * hist["val_loss"][0]
    on_train = evaluate_translator(tr, train)
    on_test = evaluate_translator(tr, test, beam_width=3)
    assert on_train["bleu"] > 70 > on_train["baseline_bleu"]
    assert on_test["bleu"] > on_test["baseline_bleu"] + 20
    assert on_train["exact_match"] > 0.5


def test_translator_save_load_roundtrip(trained, tmp_path):
    tr, _, _, test = trained
    srcs = [s for s, _ in test[:5]]
    tr.save(tmp_path / "m")
    back = Translator.load(tmp_path / "m")
    assert back.translate(srcs) == tr.translate(srcs)
    assert back.translate(srcs, beam_width=3) == tr.translate(srcs, beam_width=3)
    (tmp_path / "m" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="weights"):
        Translator.load(tmp_path / "m")
    with pytest.raises(UserError, match="nothing to translate"):
        tr.translate("   ")


def test_source_and_target_columns_reverse_and_evaluate_beam(tmp_path, capsys):
    """--source-col/--target-col pick the columns (and --reverse swaps them); the model
    records them, so evaluate reads the same ones; evaluate takes --beam-width."""
    import json

    from rnnkit.cli import main

    f = tmp_path / "pairs.tsv"
    f.write_text("".join(f"cc-by\tle chat {i}\tthe cat {i}\n" for i in range(30)))
    out = tmp_path / "m"
    assert main(["train", "seq2seq", "--file", str(f), "--source-col", "3", "--target-col",
                 "2", "--epochs", "1", "--units", "8", "--out", str(out), "--quiet"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["columns"] == [3, 2]
    assert len(cfg["history"]["val_bleu"]) == 1  # the model is selected by validation BLEU
    capsys.readouterr()
    assert main(["evaluate", str(out), "--file", str(f), "--beam-width", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["beam_width"] == 2 and res["n"] == 30
    rev = tmp_path / "r"
    assert main(["train", "seq2seq", "--file", str(f), "--source-col", "3", "--target-col",
                 "2", "--reverse", "--epochs", "1", "--units", "8", "--out", str(rev),
                 "--quiet"]) == 0
    assert json.loads((rev / "config.json").read_text())["columns"] == [2, 3]
    assert main(["train", "seq2seq", "--file", str(f), "--source-col", "4", "--epochs", "1",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "source in column 4" in capsys.readouterr().err
    assert main(["train", "seq2seq", "--file", str(f), "--target-col", "1", "--epochs", "1",
                 "--out", str(tmp_path / "bad")]) == 2


def test_model_selection_by_validation_bleu_restores_the_best_bleu_epoch():
    """With select_by='bleu' the translator returned is the epoch of the highest
    validation BLEU: re-scoring it gives that epoch's logged value."""
    from rnnkit.tasks.seq2seq import bleu, train_translator

    pairs = [(f"a{i % 7} b{i % 5}", f"x{i % 7} y{i % 5}") for i in range(120)]
    tr, hist = train_translator(pairs[:100], val_pairs=pairs[100:], units=16, embed_dim=8,
                                epochs=6, seed=0, lr=1e-2)
    scores = hist["val_bleu"]
    assert len(scores) == 6
    again = bleu(tr.translate([s for s, _ in pairs[100:]]),
                 [tr.reference_text(t) for _, t in pairs[100:]])
    assert again == pytest.approx(max(scores), abs=1e-6)


def test_bleu_selection_reads_the_first_probe_pairs(monkeypatch):
    """The epoch is chosen on the greedy BLEU of the first ``BLEU_PROBE_PAIRS`` validation
    pairs, decoded once per epoch."""
    from rnnkit.tasks import seq2seq

    pairs = [(f"a{i % 7} b{i % 5}", f"x{i % 7} y{i % 5}") for i in range(60)]
    monkeypatch.setattr(seq2seq, "BLEU_PROBE_PAIRS", 7)
    seen = []
    translate = seq2seq.Translator.translate
    monkeypatch.setattr(seq2seq.Translator, "translate",
                        lambda self, texts, *a, **k: seen.append(list(texts))
                        or translate(self, texts, *a, **k))
    seq2seq.train_translator(pairs[:40], val_pairs=pairs[40:], units=8, embed_dim=4,
                             epochs=2, seed=0)
    assert seen[:2] == [[s for s, _ in pairs[40:47]]] * 2


@pytest.mark.parametrize("attention", [None, "luong", "bahdanau"])
def test_dropout_acts_in_training_only_and_is_saved(attention, tmp_path):
    """``dropout`` zeroes embedding and output units in training (so two training-mode
    calls differ, and p -> 1 leaves only the output bias), never in evaluation (equal to
    the same weights without dropout); the rate is part of the saved config."""
    torch.manual_seed(4)
    m = Seq2Seq(9, 11, embed_dim=4, units=6, attention=attention, dropout=0.4)
    plain = Seq2Seq(9, 11, embed_dim=4, units=6, attention=attention)
    plain.load_state_dict(m.state_dict())
    src = torch.tensor([[4, 5, 6, 7], [8, 3, 0, 0]])
    tgt_in = torch.tensor([[1, 4, 5, 6], [1, 9, 10, 3]])
    m.train()
    assert not torch.allclose(m(src, tgt_in), m(src, tgt_in))
    m.eval()
    plain.eval()
    torch.testing.assert_close(m(src, tgt_in), plain(src, tgt_in), rtol=0, atol=0)
    nearly = Seq2Seq(9, 11, embed_dim=4, units=6, attention=attention, dropout=0.999999).train()
    torch.manual_seed(0)
    out = nearly(src, tgt_in)
    assert torch.equal(out, nearly.out.bias.expand_as(out))  # every o_t unit dropped
    with pytest.raises(ValueError, match="dropout"):
        Seq2Seq(9, 11, dropout=1.0)
    pairs = read_pairs(FIXTURE)[:20]
    tr, _ = train_translator(pairs, units=8, embed_dim=4, epochs=1, level="word",
                             dropout=0.3, select_by="loss")
    tr.save(tmp_path / "m")
    back = Translator.load(tmp_path / "m")
    assert back.model.dropout == 0.3 and not back.model.training
