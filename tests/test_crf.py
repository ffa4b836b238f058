"""The CRF held to brute force: log Z over every tag sequence, Viterbi = the argmax
sequence, masked (padded) sentences, the padding tag never decoded, gradients finite."""

import itertools

import torch

from rnnkit.crf import CRF


def _brute(crf: CRF, em: torch.Tensor, n: int) -> tuple[torch.Tensor, list[int]]:
    """log-sum-exp of the scores of every sequence of n tags in 1..K-1, and the best one."""
    k = crf.num_tags
    scores, seqs = [], []
    for seq in itertools.product(range(1, k), repeat=n):
        s = crf.start[seq[0]] + crf.end[seq[-1]] + sum(em[t, y] for t, y in enumerate(seq))
        s = s + sum(crf.transitions[a, b] for a, b in zip(seq, seq[1:], strict=False))
        scores.append(s)
        seqs.append(list(seq))
    st = torch.stack(scores)
    return torch.logsumexp(st, 0), seqs[int(st.argmax())]


def test_log_partition_and_viterbi_equal_brute_force_with_padding():
    torch.manual_seed(0)
    crf = CRF(4).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    em = torch.randn(3, 5, 4, dtype=torch.float64)
    lengths = [5, 3, 1]
    mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
    log_z = crf.log_partition(em, mask)
    best = crf.decode(em, mask)
    for i, n in enumerate(lengths):
        z, seq = _brute(crf, em[i], n)
        torch.testing.assert_close(log_z[i], z)
        assert best[i] == seq
        tags = torch.tensor(seq + [1] * (5 - n))[None]
        s = crf.score(em[i:i + 1], tags, mask[i:i + 1])
        # score of the best sequence is the max, so it is at most log Z
        assert float(s.detach()) <= float(z.detach()) + 1e-9


def test_nll_is_positive_and_trains():
    torch.manual_seed(1)
    crf = CRF(5)
    em = torch.randn(4, 6, 5, requires_grad=True)
    tags = torch.randint(1, 5, (4, 6))
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[2, 4:] = False
    loss = crf.nll(em, tags, mask)
    assert float(loss.detach()) > 0
    loss.backward()
    assert torch.isfinite(em.grad).all() and torch.isfinite(crf.transitions.grad).all()
    assert float(em.grad[2, 4:].abs().sum()) == 0.0  # padding gets no gradient
