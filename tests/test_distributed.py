"""Training on several processes: ``engine.fit`` under torchrun (DDP, gloo on the CPU) against one process.

The launched test runs tests/distributed_train.py twice: alone with batch size 2·B, and as 2 processes started by
``python -m torch.distributed.run`` with batch size B each. With plain SGD and a model without batch norm the two
are the same computation (DDP averages the two processes' mean gradients: the mean over the 2·B images), so they
must agree up to float32 rounding.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from coursekit import distributed, engine
from coursekit.data.synthetic import write_cifar10
from coursekit.models.classifier import Net

SCRIPT = Path(__file__).with_name("distributed_train.py")
PROCESSES, BATCH_SIZE = 2, 20
TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Measured in 16 pairs of runs (AMD EPYC without AVX-512, torch 2.14, OMP_NUM_THREADS=1 unless said): 5 with the
# default kernels (AVX2 here), 5 with ATEN_CPU_CAPABILITY=avx2, 3 with ATEN_CPU_CAPABILITY=default (no SIMD), 1 with
# 2 threads, 2 on other synthetic data (seeds 1, 2). Largest relative difference of a loss: 7e-8; largest difference
# of a weight: 6e-8 (the weights are at most about 0.15). The tolerances leave a factor of about 30 and 150 for other
# machines; without sharding (each process training on every batch) the losses differ by 9% and the weights by 0.2.
LOSS_RTOL = 2e-6
WEIGHT_ATOL = 1e-5


def _run(command: list[str], data: Path, out: Path, batch_size: int) -> SimpleNamespace:
    """Run the training script; returns its stdout, the per-rank reports and weights, and its folder."""
    out.mkdir()
    env = {name: value for name, value in os.environ.items() if name not in TORCHRUN_VARIABLES}
    # float32 in the usual layout, as every test computes (this module-scoped run starts before conftest's fixture)
    env.update(OMP_NUM_THREADS="1", COURSEKIT_DEVICE="cpu", COURSEKIT_PRECISION="32", COURSEKIT_CHANNELS_LAST="0")
    done = subprocess.run([*command, str(SCRIPT), str(data), str(out), str(batch_size)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = sorted(out.glob("rank*.json"))
    return SimpleNamespace(stdout=done.stdout, folder=out, reports=[json.loads(path.read_text()) for path in ranks],
                           weights=[torch.load(out / f"weights{r}.pt", weights_only=True) for r in range(len(ranks))])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``(one, several)``: the script run alone with batch size 2·B, and by torchrun as 2 processes with B each."""
    root = tmp_path_factory.mktemp("distributed")
    write_cifar10(root / "data", n_per_batch=32, n_test=50)  # 160 training images: 4 steps of 40 per epoch
    one = _run([sys.executable], root / "data", root / "one", PROCESSES * BATCH_SIZE)
    several = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={PROCESSES}"],
                   root / "data", root / "several", BATCH_SIZE)
    assert len(one.reports) == 1 and len(several.reports) == PROCESSES
    return one, several


def test_two_processes_train_as_one_process_with_the_global_batch(runs):
    one, several = runs
    for name in ("net", "more"):  # 2 epochs with validation, then 1 more epoch of the same model
        alone, together = one.reports[0][name], several.reports[0][name]
        assert together.keys() == alone.keys()
        for metric in ("train_loss", "val_loss", "best_score"):  # without validation ("more"): no val_loss, no score
            if alone.get(metric) is not None:
                assert together[metric] == pytest.approx(alone[metric], rel=LOSS_RTOL, abs=0)
        # Accuracies count predictions: at most one of the 160 or 50 may flip on a near tie (none did when measured).
        for metric in ("train_accuracy", "val_accuracy", "val_miou"):
            assert together.get(metric) == pytest.approx(alone.get(metric), abs=1 / 50)
        assert together["best_epoch"] == alone["best_epoch"] and together["lr"] == alone["lr"]
    assert one.reports[0]["net"]["train_loss"][1] < one.reports[0]["net"]["train_loss"][0]  # it learns something
    for key, value in one.weights[0].items():
        torch.testing.assert_close(several.weights[0][key], value, rtol=0, atol=WEIGHT_ATOL)


def test_every_process_returns_the_same_history_and_ends_with_the_same_weights(runs):
    _, several = runs
    first, second = several.reports
    for name in ("net", "more", "better", "void"):
        assert first[name] == second[name]
    assert first["better_state"] == second["better_state"]  # batch norm's running statistics included
    assert all(torch.equal(several.weights[0][k], several.weights[1][k]) for k in several.weights[0])


def test_only_rank_0_prints_and_saves_and_its_checkpoint_loads_in_one_process(runs):
    one, several = runs
    epoch_lines = [line for line in several.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 3 == len([line for line in one.stdout.splitlines() if line.startswith("epoch ")])
    assert [report["saves"] for report in several.reports] == [one.reports[0]["saves"], 0]
    model = Net()
    extras = engine.load_checkpoint(several.folder / "best.pt", model)
    assert extras["epoch"] == one.reports[0]["net"]["best_epoch"]
    expected = Net()
    engine.load_checkpoint(one.folder / "best.pt", expected)
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=WEIGHT_ATOL)


def test_a_per_batch_scheduler_steps_once_per_batch_of_every_process(runs):
    one, several = runs
    # One process: 4 batches of 40. Two: 4 steps of 2 batches of 20, so 8 steps, as len(train_loader) says.
    assert one.reports[0]["scheduler_steps"] == 4
    assert [report["scheduler_steps"] for report in several.reports] == [8, 8]


def test_a_loss_that_is_nan_on_one_process_stops_every_process(runs):
    _, several = runs
    first, last = (report["nan_error"] for report in several.reports)
    assert first.startswith("epoch 1, batch 1: the training loss became NaN or infinite on 1 of 2 processes")
    assert last.startswith("epoch 1, batch 1: the training loss became nan on 1 of 2 processes")


def test_a_batch_that_is_all_void_on_one_process_is_skipped_by_every_process(runs):
    _, several = runs
    histories = [report["void"] for report in several.reports]
    assert histories[0] == histories[1] and math.isfinite(histories[0]["train_loss"][0])


def test_the_process_group_under_torchrun(runs):
    _, several = runs
    assert [(r["rank"], r["world_size"], r["is_main"], r["launched"]) for r in several.reports] == [
        (0, 2, True, True), (1, 2, False, True)]
    assert [report["reduced"] for report in several.reports] == [[3.0, 1], [3.0, 1]]  # 1 + 2, and max(0, 1)


def _torchrun_environment(monkeypatch, world_size: str | None) -> None:
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if world_size is not None:
        monkeypatch.setenv("WORLD_SIZE", world_size)
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("LOCAL_RANK", "0")


@pytest.mark.parametrize("world_size, expected", [(None, False), ("1", False), ("2", True)])
def test_launched_reads_the_variables_torchrun_sets(monkeypatch, world_size, expected):
    _torchrun_environment(monkeypatch, world_size)
    assert distributed.launched() is expected
    assert distributed.use_ddp("auto") is expected
    assert not distributed.use_ddp(None) and not distributed.use_ddp("none")
    if expected:
        assert distributed.use_ddp("ddp")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert not distributed.launched()


def test_use_ddp_rejects_unknown_modes_and_ddp_without_torchrun(monkeypatch):
    _torchrun_environment(monkeypatch, None)
    with pytest.raises(ValueError, match="'auto', 'ddp' or None"):
        distributed.use_ddp("fabric")
    with pytest.raises(RuntimeError, match=r"torchrun --standalone --nproc-per-node 2 train\.py.*WORLD_SIZE=unset"):
        distributed.use_ddp("ddp")


def _blobs_fit(**kwargs) -> tuple[engine.History, dict]:
    """``fit`` of a small classifier on three Gaussian blobs (momentum, shuffling, validation)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(96) % 3
    points = torch.tensor([[3.0, 0.0], [-3.0, 3.0], [0.0, -3.0]])[labels] + 0.5 * torch.randn(96, 2, generator=g)
    data = TensorDataset(points, labels)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    train_loader = DataLoader(data, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    history = engine.fit(model, train_loader, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                         nn.CrossEntropyLoss(), epochs=2, val_loader=DataLoader(data, batch_size=40), device="cpu",
                         verbose=False, **kwargs)
    return history, model.state_dict()


def test_fit_in_one_process_is_the_same_with_auto_and_without_ddp(monkeypatch):
    _torchrun_environment(monkeypatch, None)
    (auto, auto_state), (alone, alone_state) = _blobs_fit(), _blobs_fit(distributed=None)
    assert auto == alone and all(torch.equal(auto_state[k], alone_state[k]) for k in alone_state)


def test_fit_with_ddp_but_without_torchrun_says_how_to_launch(monkeypatch):
    _torchrun_environment(monkeypatch, None)
    with pytest.raises(RuntimeError, match="needs several processes: start the script with torchrun"):
        _blobs_fit(distributed="ddp")


def test_outside_a_process_group_this_is_the_only_process(monkeypatch):
    _torchrun_environment(monkeypatch, None)
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.setup(torch.device("cpu")) == torch.device("cpu")  # not launched: nothing to join
    distributed.teardown()
    assert not torch.distributed.is_initialized()


def test_setup_refuses_a_device_that_neither_backend_takes(monkeypatch):
    _torchrun_environment(monkeypatch, "2")
    with pytest.raises(ValueError, match="CUDA or the CPU, not meta"):
        distributed.setup(torch.device("meta"))
    assert not torch.distributed.is_initialized()


def _batches(loader) -> list[list[int]]:
    return [batch.tolist() for (batch,) in loader]


def _collate(items):
    return torch.utils.data.default_collate(items)


@pytest.mark.parametrize("equal", [True, False])
def test_shard_loader_gives_each_process_every_wth_batch_of_a_dataloader(equal):
    def loader():  # 23 samples in batches of 3: 8 batches, the last one of 2; shuffled with a seed
        return DataLoader(TensorDataset(torch.arange(23)), batch_size=3, shuffle=True,
                          generator=torch.Generator().manual_seed(0), collate_fn=_collate)

    whole = loader()
    shards = [distributed.shard_loader(loader(), equal, process=r, processes=3) for r in range(3)]
    assert all(isinstance(shard, DataLoader) and shard.collate_fn is _collate for shard in shards)
    for _ in range(2):  # two epochs: each pass reshuffles, in step with the whole loader
        expected, batches = _batches(whole), [_batches(shard) for shard in shards]
        if equal:  # 2 complete groups of 3 batches: every process gets 2, the last 2 batches are left out
            assert [len(b) for b in batches] == [len(shard) for shard in shards] == [2, 2, 2]
            assert [batches[r][step] for step in range(2) for r in range(3)] == expected[:6]
        else:  # every batch to exactly one process: 3, 3 and 2 batches
            assert [len(b) for b in batches] == [len(shard) for shard in shards] == [3, 3, 2]
            assert [batches[i % 3][i // 3] for i in range(8)] == expected


def test_shard_loader_skips_the_other_processes_batches_of_any_other_loader():
    batches = [f"batch {i}" for i in range(5)]
    assert list(distributed.shard_loader(batches, process=1, processes=2)) == ["batch 1", "batch 3"]
    assert list(distributed.shard_loader(batches, equal=False, process=0, processes=2)) == [
        "batch 0", "batch 2", "batch 4"]
    assert len(distributed.shard_loader(batches, equal=False, process=1, processes=2)) == 2
    with pytest.raises(ValueError, match="5 batches, fewer than the 8 processes"):
        distributed.shard_loader(batches, process=0, processes=8)


def test_shard_loader_leaves_a_loader_with_a_distributed_sampler_as_it_is():
    data = TensorDataset(torch.arange(10))
    loader = DataLoader(data, batch_size=2, sampler=torch.utils.data.DistributedSampler(data, num_replicas=2, rank=1))
    assert distributed.shard_loader(loader, process=1, processes=2) is loader
