"""A short training run of the kit's CIFAR-10 ``Net`` for tests/test_distributed.py, in one process or under torchrun.

    python tests/distributed_train.py DATA OUT 40                                          # one process, batch 40
    torchrun --standalone --nproc-per-node 2 tests/distributed_train.py DATA OUT 20        # DDP, 2 × 20

DATA is a data root holding CIFAR-10 (the test writes a synthetic one with
``coursekit.data.synthetic.write_cifar10``). The training code is what a notebook writes: ``engine.fit`` with its
default ``distributed='auto'`` trains with DDP when torchrun started the script, and alone otherwise. Every
process writes ``OUT/rank<r>.json`` (histories, counts, messages) and ``OUT/weights<r>.pt`` (``Net``'s final state).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from coursekit import config, distributed, engine
from coursekit.data.cifar import CIFAR10, BatchLoader
from coursekit.models.classifier import BetterNet, Net

EPOCHS = 2
VAL_BATCH_SIZE = 20


def _record(history: engine.History) -> dict:
    return {**history.to_dict(), "best_epoch": history.best_epoch, "best_score": history.best_score}


def _error_of(run) -> str | None:
    """The message of the ``FloatingPointError`` that ``run()`` raises, or ``None``."""
    try:
        run()
    except FloatingPointError as error:
        return str(error)
    return None


def main(data: Path, out: Path, batch_size: int) -> None:
    config.seed_everything(0)
    train_set, test_set = CIFAR10(data, train=True), CIFAR10(data, train=False)
    train_loader = BatchLoader(train_set, batch_size, shuffle=True, generator=torch.Generator().manual_seed(0),
                               device="cpu")
    val_loader = DataLoader(TensorDataset(*next(iter(BatchLoader(test_set, len(test_set), device="cpu")))),
                            batch_size=VAL_BATCH_SIZE)
    loss_fn = nn.CrossEntropyLoss()
    saves, save = [], engine.save_checkpoint

    def counted_save(path, *args, **kwargs):
        saves.append(path)
        return save(path, *args, **kwargs)

    engine.save_checkpoint = counted_save

    # The equivalence: plain SGD, no batch norm, so that W processes with batch B train as one with batch W·B.
    torch.manual_seed(0)
    net = Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.2)
    net_history = engine.fit(net, train_loader, optimizer, loss_fn, epochs=EPOCHS, val_loader=val_loader,
                             num_classes=10, checkpoint_path=out / "best.pt", monitor="loss", restore_best=True,
                             device="cpu")
    # fit again on the same model, with a per-batch scheduler that leaves the rate as it is but counts its steps.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    more_history = engine.fit(net, train_loader, optimizer, loss_fn, scheduler=scheduler, scheduler_interval="batch",
                              device="cpu")

    # Batch norm: each process normalises with its own batch; all must end with rank 0's running statistics.
    torch.manual_seed(0)
    better = BetterNet(num_classes=10, width=4, dropout=0.0)
    better_history = engine.fit(better, train_loader, torch.optim.SGD(better.parameters(), lr=0.05, momentum=0.9),
                                loss_fn, val_loader=val_loader, device="cpu", verbose=False)

    # A loss that is NaN on the last process only: every process must stop, none may wait for the others.
    def nan_on_last(logits, targets):
        return loss_fn(logits, targets) * (float("nan") if distributed.rank() == distributed.world_size() - 1 else 1)

    stopped = Net()
    nan_error = _error_of(lambda: engine.fit(stopped, train_loader, torch.optim.SGD(stopped.parameters(), lr=0.05),
                                             nan_on_last, device="cpu", verbose=False))
    # Segmentation batches of one image; the last process's first one is all void (its mean loss is 0/0): every
    # process skips that first step, the later steps train.
    images = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    targets = (images[:, 0] > 0).long()
    targets[distributed.world_size() - 1] = 255
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, kernel_size=1)
    void_history = engine.fit(conv, DataLoader(TensorDataset(images, targets), batch_size=1), torch.optim.SGD(
        conv.parameters(), lr=0.1), nn.CrossEntropyLoss(ignore_index=255), device="cpu", verbose=False)

    rank = distributed.rank()
    report = {
        "rank": rank, "world_size": distributed.world_size(), "is_main": distributed.is_main(),
        "launched": distributed.launched(), "net": _record(net_history), "more": _record(more_history),
        "better": _record(better_history), "void": _record(void_history), "scheduler_steps": scheduler.last_epoch,
        "saves": len(saves), "nan_error": nan_error,
        "better_state": [float(v.double().sum()) for v in better.state_dict().values()],
    }
    if distributed.launched():  # 1 + 2 + ... + W and the largest rank, on every process
        report["reduced"] = [distributed.all_reduce(torch.tensor(rank + 1.0)).item(),
                             distributed.all_reduce(torch.tensor(rank), op="max").item()]
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    torch.save(net.state_dict(), out / f"weights{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
