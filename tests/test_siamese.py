"""Siamese similarity: losses against torch, shared weights, masking, pair-file errors,
learning to match one-typo addresses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit.errors import UserError
from rnnkit.tasks.siamese import (
    TEMPERATURE,
    Matcher,
    SiameseEncoder,
    address_pairs,
    address_triplets,
    contrastive_loss,
    evaluate_addresses,
    generate_addresses,
    make_typo,
    margin_loss,
    pair_auc,
    read_pairs,
    read_references,
    softmax_loss,
    train_matcher,
    triplet_loss,
)
from rnnkit.text import Vocabulary

pytestmark = pytest.mark.usefixtures("one_thread")


def test_margin_loss_is_torch_cosine_embedding_loss():
    torch.manual_seed(0)
    u, v = torch.randn(20, 6), torch.randn(20, 6)
    y = torch.randint(0, 2, (20,))
    s = torch.nn.functional.cosine_similarity(u, v)
    for m in (0.0, 0.3):
        oracle = torch.nn.CosineEmbeddingLoss(margin=m)(u, v, 2 * y - 1)
        torch.testing.assert_close(margin_loss(s, y, m), oracle)
    s2 = torch.tensor([0.5, 0.5, -0.2])
    y2 = torch.tensor([1, 0, 0])
    assert float(contrastive_loss(s2, y2, 0.1)) == pytest.approx((0.25 + 0.16 + 0.0) / 3)


def test_twin_encoders_share_weights_and_mask_padding():
    torch.manual_seed(0)
    enc = SiameseEncoder(10, 4, 5, 3).eval()
    a = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 3]])
    b = torch.tensor([[6, 7, 8, 9, 3], [3, 4, 5, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(enc.similarity(a, b), enc.similarity(b, a))
        torch.testing.assert_close(enc.similarity(a, a), torch.ones(2))
        torch.testing.assert_close(enc(a[:1, :3]), enc(a[:1]))  # padding does not count
    # one set of encoder weights: both branches' gradients land in the same tensors
    enc.train()
    enc.similarity(a, b).sum().backward()
    names = [n for n, _ in enc.named_parameters()]
    assert len(names) == len(set(names)) and all(p.grad is not None for p in enc.parameters())


def test_read_pairs_and_references_errors(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("a\tb\t1\nc\td\t0\n")
    assert read_pairs(p) == ([("a", "b"), ("c", "d")], [1, 0])
    p.write_text("a\tb\nc\td\n")
    assert read_pairs(p) == ([("a", "b"), ("c", "d")], None)
    for content, msg in [("a\tb\t1\nc d\n", r"pairs.tsv:2: expected"),
                         ("a\tb\tmaybe\n", r"pairs.tsv:1: label must be"),
                         ("a\tb\t1\nc\td\n", r"pairs.tsv:2: some lines have a label"),
                         ("a\tb\t1\nc\td\t1\n", r"all pairs have label 1"),
                         ("a\t\t1\n", r"pairs.tsv:1: empty text")]:
        p.write_text(content)
        with pytest.raises(UserError, match=msg):
            read_pairs(p)
    r = tmp_path / "refs.txt"
    r.write_text("\n\n")
    with pytest.raises(UserError, match="no reference lines"):
        read_references(r)


def test_typos_change_exactly_one_character():
    rng = np.random.default_rng(0)
    refs = generate_addresses(50, rng)
    assert len(set(refs)) == 50
    for a in refs:
        num, street, suffix = a.split(" ")
        assert 1 <= int(num) <= 9999
        t = make_typo(a, rng)
        assert len(t) == len(a) and sum(x != y for x, y in zip(a, t, strict=True)) == 1
    pairs, labels = address_pairs(refs, 40, rng)
    assert labels.count(1) == 20
    assert all((b in refs) == (y == 1) or y == 0 for (_, b), y in zip(pairs, labels,
                                                                     strict=True))


def test_matcher_learns_address_matching(tmp_path):
    rng = np.random.default_rng(0)
    train_refs = generate_addresses(300, rng)
    test_refs = generate_addresses(50, np.random.default_rng(1))
    pairs, labels = address_pairs(train_refs, 1200, rng)
    m, hist = train_matcher(pairs, labels, units=24, out_dim=24, epochs=4, lr=5e-3,
                            batch_size=64, seed=0)
    assert hist["loss"][-1] < 0.85 * hist["loss"][0]
    res = evaluate_addresses(m, test_refs, 100, np.random.default_rng(2))
    assert res["accuracy"] > 10 * res["random_baseline_accuracy"]
    # held-out labelled pairs: training widens the gap between typo'd positives and
    # hard negatives (another address sharing two of the three parts) over an untrained twin
    tp, tl = address_pairs(test_refs, 400, np.random.default_rng(5))
    hard = [i for i in range(len(tp)) if i % 4 != 1]
    tp, tl = [tp[i] for i in hard], [tl[i] for i in hard]
    untrained = Matcher(SiameseEncoder(len(m.vocab), 16, 24, 24), m.vocab)

    def gap(mm: Matcher) -> float:
        s = mm.similarity([a for a, _ in tp], [b for _, b in tp]).numpy()
        y = np.asarray(tl)
        return float(s[y == 1].mean() - s[y == 0].mean())

    assert gap(m) > gap(untrained) + 0.05
    assert pair_auc(m, tp, tl) > 0.8
    m.save(tmp_path / "m")
    back = Matcher.load(tmp_path / "m")
    q = make_typo(test_refs[0], rng)
    assert back.match(q, test_refs, 3) == m.match(q, test_refs, 3)
    assert len(m.match([q, q], test_refs, 5)[1]) == 5


def test_unlabelled_pairs_get_random_negatives():
    rng = np.random.default_rng(3)
    refs = generate_addresses(40, rng)
    pairs = [(make_typo(r, rng), r) for r in refs]
    m, hist = train_matcher(pairs, None, units=8, out_dim=8, epochs=2, batch_size=16)
    assert len(hist["loss"]) == 2 and np.isfinite(hist["loss"]).all()
    assert isinstance(m.vocab, Vocabulary)


def test_in_batch_losses_against_explicit_formulas():
    torch.manual_seed(0)
    s = torch.rand(4, 6) * 2 - 1
    hinge = [max(0.0, 0.3 - float(s[i, i]) + max(float(s[i, j]) for j in range(6) if j != i))
             for i in range(4)]
    assert float(triplet_loss(s, 0.3)) == pytest.approx(np.mean(hinge), rel=1e-6)
    z = s.double().numpy() / TEMPERATURE
    nll = [np.log(np.exp(z[i]).sum()) - z[i, i] for i in range(4)]
    assert float(softmax_loss(s)) == pytest.approx(np.mean(nll), rel=1e-5)


def test_meanmax_pooling_masks_padding_and_in_batch_training():
    torch.manual_seed(0)
    enc = SiameseEncoder(10, 4, 5, 3, cell="gru", pooling="meanmax").eval()
    a = torch.tensor([[3, 4, 5, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(enc(a[:, :3]), enc(a))
    rng = np.random.default_rng(4)
    refs = generate_addresses(60, rng)
    pairs, labels = address_triplets(refs, 60, rng)
    assert labels == [1, 0] * 60 and all(pairs[i][0] == pairs[i + 1][0] for i in range(0, 120, 2))
    m, hist = train_matcher(pairs, labels, loss="triplet", margin=0.2, cell="gru", units=8,
                            out_dim=8, epochs=2, batch_size=16, val_pairs=pairs[:20],
                            val_labels=labels[:20], patience=1)
    assert np.isfinite(hist["loss"]).all() and len(hist["val_loss"]) == len(hist["loss"])
    assert m.model.pooling == "meanmax"
