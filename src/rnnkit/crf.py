"""Linear-chain conditional random field over per-step tag scores (Lafferty et al. 2001).

For emissions ``E_t(y)`` (a tagger's logits, ``(batch, time, tags)``), transition scores
``A[y', y]``, start scores ``s[y]`` and end scores ``e[y]``, a tag sequence ``y_1..y_n`` of a
sentence of ``n`` real steps scores::

    score(y) = s[y_1] + sum_{t=1..n} E_t(y_t) + sum_{t=2..n} A[y_{t-1}, y_t] + e[y_n]
    log Z    = log sum_y exp score(y)                 (forward algorithm, O(n K^2))
    p(y | x) = exp(score(y) - log Z)

Training minimises ``-log p(gold | x)``; :meth:`CRF.decode` returns the highest-scoring
sequence (Viterbi). The real steps of a sentence are a prefix given by ``mask``
(``(batch, time)``, True = real; padding at the end, as the tagger pads). Tags listed in
``forbidden`` (the padding tag 0) are never decoded.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CRF(nn.Module):
    """Transition, start and end scores of a linear-chain CRF over ``num_tags`` tags."""

    def __init__(self, num_tags: int, forbidden: tuple[int, ...] = (0,)):
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags must be positive, got {num_tags}")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        self.forbidden = tuple(forbidden)

    def _emissions(self, emissions: Tensor) -> Tensor:
        if not self.forbidden:
            return emissions
        e = emissions.clone()
        e[..., list(self.forbidden)] = torch.finfo(e.dtype).min / 4
        return e

    def score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """``score(y)`` of the given tag sequences: ``(batch,)``."""
        b, t, _ = emissions.shape
        m = mask.to(emissions.dtype)
        rows = torch.arange(b, device=emissions.device)
        em = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)  # (B, T)
        total = self.start[tags[:, 0]] + (em * m).sum(1)
        if t > 1:
            trans = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
            total = total + (trans * m[:, 1:]).sum(1)
        last = mask.long().sum(1).clamp(min=1) - 1
        return total + self.end[tags[rows, last]]

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """``log Z`` per sentence (forward algorithm): ``(batch,)``."""
        emissions = self._emissions(emissions)
        alpha = self.start + emissions[:, 0]  # (B, K)
        for t in range(1, emissions.shape[1]):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + self.transitions, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t, None], nxt, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def nll(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """``sum_sentences -log p(gold | x)`` divided by the number of real steps (so its
        scale matches a per-token cross-entropy)."""
        nll = self.log_partition(emissions, mask) - self.score(emissions, tags, mask)
        return nll.sum() / mask.sum().clamp(min=1)

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor) -> list[list[int]]:
        """The Viterbi (highest-scoring) tag sequence of every sentence, its real steps only."""
        emissions = self._emissions(emissions)
        b, t, _ = emissions.shape
        score = self.start + emissions[:, 0]
        back = []
        for s in range(1, t):
            cand = score.unsqueeze(2) + self.transitions  # (B, K prev, K next)
            best, idx = cand.max(dim=1)
            nxt = best + emissions[:, s]
            keep = mask[:, s, None]
            score = torch.where(keep, nxt, score)
            # a padded step points each tag back at itself, so backtracking passes through
            ident = torch.arange(self.num_tags, device=idx.device).expand_as(idx)
            back.append(torch.where(keep, idx, ident))
        score = score + self.end
        lengths = mask.long().sum(1).clamp(min=1).tolist()
        best_last = score.argmax(1)
        out = []
        for i in range(b):
            y = [int(best_last[i])]
            for s in range(t - 2, -1, -1):
                y.append(int(back[s][i, y[-1]]))
            y.reverse()
            out.append(y[:lengths[i]])
        return out
