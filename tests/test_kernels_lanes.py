"""The batch-in-lanes layout of kernels/lanes.py: chunking, padding lanes and the layout
round trip, on top of the backend-level equality tests of test_kernels.py."""

from __future__ import annotations

import pytest
import torch

from rnnkit import GRU, LSTM, SimpleRNN, lengths_to_mask
from rnnkit.kernels import lanes, native


@pytest.mark.parametrize("batch", [1, 9, 16, 37, 64])
def test_chunking_covers_the_batch(batch):
    for steps, gates, units in ((1, 1, 1), (100, 32, 8), (200, 128, 32)):
        nc, nl = lanes.chunking(batch, steps, gates, units)
        assert nl % lanes.LANES == 0 and nc * nl >= batch and (nc - 1) * nl < batch
        work = batch * steps * gates * (units + 16)
        assert nc == 1 or work // nc >= lanes.MIN_CHUNK_WORK
    assert 1 <= nc <= max(1, torch.get_num_threads())


def test_layout_round_trip():
    x = torch.randn(37, 5, 3)
    nc, nl = 2, 24
    lx = lanes.to_lanes(x, nc, nl)
    assert lx.shape == (nc, 5, 3, nl) and lx.is_contiguous()
    torch.testing.assert_close(lanes.from_lanes(lx, 37), x)
    assert (lanes.from_lanes(lx, nc * nl)[37:] == 0).all()  # zero padding lanes


@pytest.mark.parametrize("cls", [SimpleRNN, LSTM, GRU])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [3, 37, 150])
@pytest.mark.parametrize("units", [7, 24])
def test_threads_and_padding_lanes_match_reference(cls, threads, batch, units, monkeypatch):
    """Two chunks (two threads) and a batch that is not a multiple of 8 lanes give the
    reference's outputs and gradients (the padding lanes must not leak into dW); with 7
    units the recurrent products run in the compiled loop, with 24 through BLAS (one BLAS
    thread per chunk)."""
    if not native.LIB.rk_has_openmp() and threads > 1:
        pytest.skip("the kernels were built without OpenMP (one thread)")
    torch.manual_seed(threads * 100 + batch)
    monkeypatch.setattr(lanes, "MIN_CHUNK_WORK", 1)  # split even these tiny batches
    old = torch.get_num_threads()
    torch.set_num_threads(threads)  # the kernels' thread count follows torch's
    try:
        assert lanes.chunking(batch)[0] == min(threads, batch // lanes.LANES) or batch < 8
        layer = cls(units, return_sequences=True)
        gates = {SimpleRNN: 1, LSTM: 4, GRU: 3}[cls]
        assert (units * gates * units >= lanes.GEMM_MIN) == (units == 24)
        x = torch.randn(batch, 9, 4, requires_grad=True)
        mask = lengths_to_mask(torch.randint(0, 10, (batch,)), 9)
        outs = {}
        for backend in ("lanes", "reference"):
            layer.backend = backend
            layer.zero_grad()
            x.grad = None
            y = layer(x, mask=mask)
            (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
            outs[backend] = (y.detach(), x.grad.clone(),
                             [p.grad.clone() for p in layer.parameters()])
        assert layer.last_backend == "reference"
        (y1, gx1, gw1), (y2, gx2, gw2) = outs["lanes"], outs["reference"]
        torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gx1, gx2, atol=1e-5, rtol=1e-4)
        for a, b in zip(gw1, gw2, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        assert torch.get_num_threads() == threads  # torch's (and MKL's) setting unchanged
    finally:
        torch.set_num_threads(old)
