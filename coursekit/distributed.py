"""Process groups for training one model on several processes (GPUs, nodes) with ``torch.distributed``.

``torchrun --nproc-per-node 8 train.py`` starts ``train.py`` eight times and tells each process who it is in
environment variables: ``WORLD_SIZE`` (how many processes), ``RANK`` (this one, 0 to WORLD_SIZE - 1) and
``LOCAL_RANK`` (this one among those on its machine: the GPU it uses). ``engine.fit`` then trains with
``DistributedDataParallel`` (DDP): every process computes the gradient of its own batch, DDP averages the
gradients over the processes during the backward pass, and every process takes the same optimizer step, so
the copies of the model stay equal. One step of W processes with batch size B is one step with the W·B
images of their batches together (``shard_loader`` says which).

Outside a process group ``rank()`` is 0, ``world_size()`` 1 and ``is_main()`` true, and ``setup`` in a process
that torchrun did not start as one of several only returns the device.
"""
from __future__ import annotations

import atexit
import itertools
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset

from . import config

MODES = ("auto", "ddp", "none")
# What a rebuilt DataLoader keeps of the original one (in_order exists from torch 2.6 on).
_LOADER_SETTINGS = ("num_workers", "collate_fn", "pin_memory", "timeout", "worker_init_fn", "multiprocessing_context",
                    "generator", "prefetch_factor", "persistent_workers", "pin_memory_device", "in_order")


def launched() -> bool:
    """Whether torchrun started this process as one of several: ``WORLD_SIZE`` > 1, ``RANK`` and ``LOCAL_RANK`` set."""
    return (int(os.environ.get("WORLD_SIZE") or 1) > 1
            and "RANK" in os.environ and "LOCAL_RANK" in os.environ)


def use_ddp(mode: str | None) -> bool:
    """Whether ``engine.fit(distributed=mode)`` trains with DDP.

    Args:
        mode: ``'auto'``: exactly when ``launched()``; ``'ddp'``: always; ``None`` or ``'none'``: never.

    Raises:
        ValueError: ``mode`` is none of these.
        RuntimeError: ``'ddp'`` in a process that torchrun did not start as one of several.
    """
    mode = "none" if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"distributed={mode!r} is not understood; use 'auto', 'ddp' or None.")
    if mode == "ddp" and not launched():
        raise RuntimeError("distributed='ddp' needs several processes: start the script with torchrun, one process "
                           "per GPU, e.g. `torchrun --standalone --nproc-per-node 2 train.py` (this process has "
                           f"WORLD_SIZE={os.environ.get('WORLD_SIZE', 'unset')}). distributed='auto' trains with DDP "
                           "when so started and in this one process otherwise.")
    return mode == "ddp" or (mode == "auto" and launched())


def setup(device: torch.device | None = None) -> torch.device:
    """Join the process group that torchrun describes (once per process) and return this process's device.

    Call it at the top of a script, before anything is put on the GPU: on CUDA the device is
    ``cuda:LOCAL_RANK``, made the current CUDA device, so that ``"cuda"`` (``config.get_device()``) means this
    process's GPU everywhere; the backend is NCCL. On the CPU the backend is gloo. ``engine.fit`` calls it too.
    In a process that torchrun did not start as one of several it only returns the device.

    Args:
        device: where this process computes; ``None`` is ``config.get_device()``.

    Returns:
        The device: ``cuda:LOCAL_RANK`` for any CUDA device when launched, else ``device``.

    Raises:
        ValueError: launched with a device that is neither CUDA nor the CPU (gloo and NCCL take no other).
    """
    device = device if device is not None else config.get_device()
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"training on several processes needs CUDA or the CPU, not {device.type}; "
                         "set COURSEKIT_DEVICE=cpu or leave it unset on a CUDA machine.")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(teardown)
    return device


def teardown() -> None:
    """Leave the process group, if this process is in one (``setup`` arranges it for the exit)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    """This process's number among all of them, 0 to ``world_size() - 1``; 0 outside a process group."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """How many processes train together; 1 outside a process group."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process is rank 0: the one that prints and writes files."""
    return rank() == 0


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Combine ``tensor`` over all processes in place: every process ends with the same result.

    Args:
        tensor: any shape and dtype, on this process's device (NCCL takes CUDA tensors only).
        op: ``'sum'`` or ``'max'`` (elementwise).

    Returns:
        ``tensor`` itself, now holding the sum or maximum.
    """
    dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return tensor


def wait_for_all(device: torch.device) -> None:
    """Return once every process has called it (a barrier made of one all-reduce, for gloo and NCCL alike)."""
    all_reduce(torch.zeros((), device=device))


def data_parallel(model: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """``model`` wrapped in ``DistributedDataParallel``.

    The wrapper's forward is ``model``'s; its backward averages the gradients over the processes. Rank 0's
    parameters and buffers are copied to every process first, so the copies start equal.

    Args:
        model: already on ``device``, this process's device (``setup``).
    """
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (batch norm's running statistics) to every process, in place.

    DDP does this at the start of every forward pass, so after an epoch's last batch the processes' buffers
    differ until the next one; evaluating or saving in between needs them equal.
    """
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


class _Shard:
    """Items ``rank``, ``rank + world_size``, ``rank + 2·world_size``, ... of a re-iterable (see ``shard_loader``)."""

    def __init__(self, items, rank: int, world_size: int, equal: bool) -> None:
        self.items, self.rank, self.world_size, self.equal = items, rank, world_size, equal

    def __iter__(self):
        if self.equal:
            # One iterator zipped with itself: groups of world_size consecutive items, an incomplete last one dropped.
            return (group[self.rank] for group in zip(*[iter(self.items)] * self.world_size))
        return itertools.islice(self.items, self.rank, None, self.world_size)

    def __len__(self) -> int:
        n = len(self.items)
        return n // self.world_size if self.equal else len(range(self.rank, n, self.world_size))


def shard_loader(loader, equal: bool = True, process: int | None = None, processes: int | None = None):
    """This process's share of ``loader``'s batches: batches ``rank``, ``rank + W``, ``rank + 2W``, ... (W processes).

    The W processes' batches of one step are W consecutive batches of ``loader``. For a loader whose batches are
    consecutive slices of one shuffled order (a ``DataLoader``, ``BatchLoader``), a DDP step with batch size B
    thus sees the images that one process's step with batch size W·B and the same seed would. Every process
    must iterate ``loader`` in the same order, which a seeded shuffle gives (every process runs the same code
    with the same seeds, as the notebooks do: ``config.seed_everything``, seeded generators).

    A ``DataLoader`` over a map-style dataset is rebuilt with a batch sampler that yields only this process's
    batches of indices, so each process loads only its own images (workers, collate function, generator and
    the other settings are kept). Any other loader (``coursekit.data.cifar.BatchLoader``, an iterable dataset)
    is iterated whole and every batch but this process's own is skipped. A loader with a ``DistributedSampler``
    already yields one process's share and is returned as it is.

    Args:
        loader: a re-iterable of batches, e.g. of ``(images, targets)``.
        equal: keep only complete groups of W batches (the last ``len(loader) % W`` batches of each pass are
            dropped), so that every process gets as many batches: DDP training needs it, since every step waits
            for every process. With ``False`` each batch goes to exactly one process (for evaluation).
        process: this process's rank; ``None`` asks the process group (``rank()``).
        processes: W; ``None`` asks the process group (``world_size()``).

    Returns:
        A re-iterable of this process's batches, as ``loader`` yields them; it has a length where ``loader`` has one.

    Raises:
        ValueError: with ``equal``, ``loader`` has fewer batches than there are processes.
    """
    if isinstance(getattr(loader, "sampler", None), DistributedSampler):
        return loader
    process = rank() if process is None else process
    processes = world_size() if processes is None else processes
    if equal and hasattr(loader, "__len__") and len(loader) < processes:
        raise ValueError(f"the loader has {len(loader)} batches, fewer than the {processes} processes that share "
                         "them equally; use a smaller batch size or fewer processes.")
    if isinstance(loader, DataLoader) and loader.batch_sampler is not None and not isinstance(loader.dataset,
                                                                                            IterableDataset):
        settings = {name: getattr(loader, name) for name in _LOADER_SETTINGS if hasattr(loader, name)}
        return DataLoader(loader.dataset, batch_sampler=_Shard(loader.batch_sampler, process, processes, equal),
                          **settings)
    return _Shard(loader, process, processes, equal)
