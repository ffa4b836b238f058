"""Data-parallel training with ``torch.distributed``, as launched by ``torchrun``.

    torchrun --nproc-per-node 2 -m rnnkit train text --file data.csv ...

Every process (rank) builds the same model from the same seed and sees the same shuffled
batches; :func:`shard` gives rank ``r`` of ``W`` the rows ``r, r+W, r+2W, ...`` of each
batch, so ``--batch-size`` is the global batch. ``DistributedDataParallel`` averages the
gradients over the ranks after each backward pass; with equal shards that average is the
gradient of the mean loss over the global batch, so W processes train the weights one
process would (to float rounding). Epoch losses and metrics are averaged over the ranks
weighted by their samples (:func:`reduce_means`); validation runs on every rank over the
whole validation set, so every rank takes the same early-stopping decisions. Only rank 0
writes model directories, checkpoints, history and ``--json`` output (the CLI gives the
other ranks a throw-away output directory).

Backend: ``nccl`` when CUDA is available, else ``gloo``. The fused CPU training step does not
run under data parallelism (``history.params["distributed"]`` says so); the per-layer
kernels do.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn


def world() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` outside a process group."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env() -> tuple[int, int]:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE``, ``RANK``,
    ``MASTER_ADDR``...) when ``WORLD_SIZE > 1``; returns :func:`world`."""
    dist = torch.distributed
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() \
            and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return world()


def backend() -> str | None:
    dist = torch.distributed
    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


def start_together(ok: bool) -> bool:
    """Rank 0's answer to "does the run start?", on every rank: rank 0 passes whether its
    own checks passed (the output directory, ``--resume``), the other ranks pass True and
    receive rank 0's answer. Without it, a rank would start training after rank 0 stopped
    with an error and wait for it forever in the first gradient average. Returns ``ok``
    without a process group."""
    if world()[1] == 1:
        return ok
    t = torch.tensor([int(ok)], dtype=torch.int64,
                     device="cuda" if backend() == "nccl" else "cpu")
    torch.distributed.broadcast(t, src=0)
    return bool(t.item())


def data_parallel(model: nn.Module) -> nn.Module | None:
    """``DistributedDataParallel(model)`` when there are several ranks, else None."""
    rank, size = world()
    if size == 1:
        return None
    from torch.nn.parallel import DistributedDataParallel

    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    ids = [dev.index] if dev.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _rows(obj: Any) -> set[int]:
    if isinstance(obj, Tensor):
        return {int(obj.shape[0])} if obj.dim() else {-1}
    if isinstance(obj, (tuple, list)):
        return set().union(*(_rows(o) for o in obj)) if obj else set()
    if isinstance(obj, dict):
        return set().union(*(_rows(o) for o in obj.values())) if obj else set()
    return {-1}


def _take(obj: Any, rank: int, size: int) -> Any:
    if isinstance(obj, Tensor):
        return obj[rank::size]
    if isinstance(obj, tuple):
        return tuple(_take(o, rank, size) for o in obj)
    if isinstance(obj, list):
        return [_take(o, rank, size) for o in obj]
    if isinstance(obj, dict):
        return {k: _take(v, rank, size) for k, v in obj.items()}
    return obj


def shard(inputs: Any, targets: Any) -> tuple[Any, Any]:
    """This rank's rows ``rank::world`` of a batch whose tensors all have the same number of
    rows, divisible by the world size. Any other batch (a partial last batch, an in-batch
    loss whose candidates outnumber its queries) is kept whole on every rank: each rank then
    computes the same full-batch gradient, and the average is unchanged."""
    rank, size = world()
    if size == 1:
        return inputs, targets
    rows = _rows((inputs, targets))
    if len(rows) != 1:
        return inputs, targets
    n = rows.pop()
    if n < size or n % size:
        return inputs, targets
    return _take(inputs, rank, size), _take(targets, rank, size)


def reduce_means(totals: dict[str, tuple[float, int]]) -> dict[str, float]:
    """``{key: (sum, count)}`` summed over the ranks -> ``{key: sum / count}``."""
    keys = sorted(totals)
    if world()[1] == 1:
        return {k: totals[k][0] / max(totals[k][1], 1) for k in keys}
    t = torch.tensor([[totals[k][0], float(totals[k][1])] for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return {k: float(t[i, 0] / max(float(t[i, 1]), 1.0)) for i, k in enumerate(keys)}


def barrier() -> None:
    if world()[1] > 1:
        torch.distributed.barrier()


def shutdown() -> None:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
