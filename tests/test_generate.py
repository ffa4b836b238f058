"""Generation: language model (perplexity, sampling with temperature/top-k), conditional
generation of digit names from 8x8 images, and input errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.errors import UserError
from rnnkit.tasks._seqtools import END
from rnnkit.tasks.generate import (
    Captioner,
    ConditionalGenerator,
    LanguageModel,
    TextLM,
    caption_accuracy,
    load_digit_names,
    read_text,
    sample_next,
    train_captioner,
    train_lm,
    unigram_perplexity,
)
from rnnkit.text import OOV, START, Vocabulary

FIXTURE = Path(__file__).parent / "fixtures" / "small_text.txt"


pytestmark = pytest.mark.usefixtures("one_thread")


def test_read_text_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nanother\n\xff\xfe broken\n")
    with pytest.raises(UserError, match=r"bad.txt:3: not UTF-8"):
        read_text(bad)
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(UserError, match="blank.txt: the file has no text"):
        read_text(tmp_path / "blank.txt")
    with pytest.raises(UserError, match="not found"):
        read_text(tmp_path / "missing.txt")
    assert read_text(FIXTURE, max_chars=50) == FIXTURE.read_text()[:50]


def test_sample_next_matches_tempered_top_k_softmax():
    logits = torch.tensor([[0.0, 0.0, 0.0, 2.0, 1.0, 0.5, -1.0, 1.5]])
    # temperature 0 and top_k 1 are argmax; specials (0, 1, 2) are never drawn
    assert int(sample_next(logits, 0.0)) == 3
    g = torch.Generator().manual_seed(0)
    assert int(sample_next(logits, 1.0, top_k=1, generator=g)) == 3
    big = torch.tensor([[9.0, 9.0, 9.0, 0.0, 0.0]])
    assert set(sample_next(big.expand(200, -1), 1.0, generator=g).tolist()) <= {3, 4}
    # empirical frequencies against softmax(top-3 logits / T), computed independently
    n, t = 40000, 0.7
    draws = sample_next(logits.expand(n, -1), t, top_k=3, generator=g)
    freq = np.bincount(draws.numpy(), minlength=8) / n
    top = np.array([2.0, 1.5, 1.0]) / t
    p = np.exp(top - top.max())
    p /= p.sum()
    np.testing.assert_allclose(freq[[3, 7, 4]], p, atol=0.01)
    assert freq[[0, 1, 2, 5, 6]].sum() == 0
    with pytest.raises(ValueError, match="top_k"):
        sample_next(logits, 1.0, top_k=0)


def test_chunked_perplexity_equals_one_pass():
    torch.manual_seed(0)
    vocab = Vocabulary(list("abcde"))
    lm = TextLM(LanguageModel(len(vocab), 4, 8, "gru").eval(), vocab, "char", seq_len=3)
    text = "abcdeedcbaabx"  # 'x' is unknown -> id 2
    ids = torch.tensor([START, *vocab.encode(list(text), add_start=False)])
    assert int(ids[-1]) == OOV
    with torch.no_grad():
        logits, _ = lm.model(ids[None, :-1])
        nll = torch.nn.functional.cross_entropy(logits[0], ids[1:])
    assert lm.perplexity(text) == pytest.approx(math.exp(float(nll)), rel=1e-5)


@pytest.fixture(scope="module")
def char_lm():
    text = read_text(FIXTURE)
    train, held = text[:2000], text[2000:]
    lm, hist = train_lm(train, val_text=held, level="char", units=48, embed_dim=16,
                        seq_len=32, batch_size=16, epochs=14, lr=1e-2, seed=0)
    return lm, hist, train, held


def test_char_lm_learns_and_beats_unigram(char_lm):
    lm, hist, train, held = char_lm
    assert hist["loss"][-1] < 0.8 * hist["loss"][0]
    assert hist["val_loss"][-1] < hist["val_loss"][0]
    ppl = lm.perplexity(held)
    assert ppl < 0.7 * unigram_perplexity(train, held, "char", lm.vocab)
    assert math.log(ppl) == pytest.approx(hist["val_loss"][-1], rel=1e-5)


def test_generation_prompt_seed_and_roundtrip(char_lm, tmp_path):
    lm = char_lm[0]
    a = lm.generate("The ", 40, temperature=0.8, top_k=5, seed=3)
    assert a.startswith("The ") and len(a) == 44
    assert a == lm.generate("The ", 40, temperature=0.8, top_k=5, seed=3)
    assert lm.generate("The ", 30, temperature=0) == lm.generate("The ", 30, top_k=1, seed=9)
    lm.save(tmp_path / "lm")
    back = TextLM.load(tmp_path / "lm")
    assert back.generate("The ", 40, temperature=0.8, top_k=5, seed=3) == a
    assert back.perplexity(char_lm[3]) == pytest.approx(lm.perplexity(char_lm[3]))


def test_word_lm_learns():
    text = read_text(FIXTURE)
    lm, hist = train_lm(text[:2000], level="word", units=32, embed_dim=16, seq_len=12,
                        batch_size=8, epochs=8, lr=1e-2, seed=0)
    held = text[2000:]
    assert hist["loss"][-1] < hist["loss"][0]
    assert lm.perplexity(held) < unigram_perplexity(text[:2000], held, "word", lm.vocab)
    out = lm.generate("The cat", 5, temperature=0.5, seed=0)
    assert out.startswith("The cat ") and len(out.split()) == 7
    with pytest.raises(UserError, match="seq_len"):
        train_lm("too short", seq_len=50)


def test_conditional_state_comes_from_features():
    torch.manual_seed(0)
    m = ConditionalGenerator(5, 9, 4, 6).eval()
    f = torch.randn(2, 5)
    tgt = torch.tensor([[START, 4, 5], [START, 4, 5]])
    with torch.no_grad():
        h0, c0 = m.initial_state(f)
        torch.testing.assert_close(h0, torch.tanh(f @ m.init_h.kernel + m.init_h.bias))
        manual = m.out.logits(m.rnn(m.embed(tgt), initial_state=(h0, c0))[0])
        torch.testing.assert_close(m(f, tgt), manual)
    assert not torch.allclose(manual[0], manual[1])
    with pytest.raises(ValueError, match="features"):
        m.initial_state(torch.zeros(2, 4))


def test_digit_names_learned_from_images(tmp_path):
    x, names, labels = load_digit_names()
    assert x.shape == (1797, 64) and 0 <= x.min() and x.max() <= 1
    assert names[0] == "zero" and names[int(np.argmax(labels == 7))] == "seven"
    cap, hist = train_captioner(x[:800], names[:800], units=32, epochs=5, seed=0)
    assert hist["loss"][-1] < 0.2 * hist["loss"][0]
    res = caption_accuracy(cap, x[1400:], names[1400:], names[:800])
    assert res["baseline_accuracy"] < 0.15
    assert res["accuracy"] > 0.6
    cap.save(tmp_path / "cap")
    assert Captioner.load(tmp_path / "cap").generate(x[1400:1410]) == cap.generate(x[1400:1410])
    x_in, y_out = cap.targets(["one"])
    assert x_in[0].tolist() == [START, *y_out[0, :3].tolist()] and int(y_out[0, 3]) == END


def test_lm_early_stopping_keeps_best_epoch():
    text = read_text(FIXTURE)
    # held-out text reversed: after an epoch or two, learning English makes it less likely
    held = text[1500:2000][::-1]
    lm, hist = train_lm(text[:1500], val_text=held, units=16, embed_dim=8, seq_len=16,
                        batch_size=16, epochs=8, lr=3e-2, seed=0, patience=1)
    val = hist["val_loss"]
    assert len(val) < 8 and val[-1] > min(val)  # stopped early, after a worse epoch
    # the restored weights are those of the epoch with the lowest validation loss
    assert math.log(lm.perplexity(held)) == pytest.approx(min(val), rel=1e-5)
    with pytest.raises(UserError, match="needs validation"):
        train_lm(text[:500], seq_len=16, epochs=1, patience=2)
