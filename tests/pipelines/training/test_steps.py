"""The training steps without Ray: the loss, the stop decision, and replicas kept identical after uneven shards."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from h2crop_core.models.loss import hierarchical_loss
from h2crop_core.taxonomy import UNLABELLED
from pipelines.settings import TrainSettings
from pipelines.training.finetune import Freeze
from pipelines.training.steps import (
    TrainState,
    align_optimizer_state,
    batch_weights,
    should_stop,
    train_epoch,
    train_step,
)


def _logits(classes=(3, 4), batch=2, size=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, size, size, generator=generator, requires_grad=True) for n in classes]


def test_hierarchical_loss_ignores_unlabelled_pixels():
    logits = _logits()
    label = torch.randint(0, 3, (2, 4, 4, 4), generator=torch.Generator().manual_seed(1))
    full = hierarchical_loss(logits, label, (1, 2))
    expected = sum(torch.nn.functional.cross_entropy(lk, label[:, k].long()) for k, lk in enumerate(logits))
    assert torch.allclose(full, expected)

    # unlabelled pixels change nothing but the denominator: the loss is the mean over labelled pixels only
    masked = label.clone()
    masked[:, :, :2] = UNLABELLED
    part = hierarchical_loss(logits, masked, (1, 2))
    expected = sum(
        torch.nn.functional.cross_entropy(lk[:, :, 2:], label[:, k, 2:].long()) for k, lk in enumerate(logits)
    )
    assert torch.allclose(part, expected)


def test_sample_weights_weigh_each_samples_pixels():
    logits = _logits()
    label = torch.randint(0, 3, (2, 4, 4, 4), generator=torch.Generator().manual_seed(1))
    label[1, :, :1] = UNLABELLED
    # weights are per sample and level: the level's loss is the weighted pixel sum over the batch size
    labelled = [(label[:, k] != UNLABELLED).sum(dim=(1, 2)).float() for k in range(2)]
    per_pixel = torch.stack([2 / labelled[0], 2 / labelled[1], torch.zeros(2), torch.zeros(2)], dim=1)  # (B, 4)
    plain = hierarchical_loss(logits, label, (1, 2))
    assert not torch.allclose(hierarchical_loss(logits, label, (1, 2), per_pixel), plain)  # per sample, not pooled
    equal = torch.stack([torch.full((2,), 2 / float(labelled[k].sum())) for k in range(2)] + [torch.zeros(2)] * 2, 1)
    assert torch.allclose(hierarchical_loss(logits, label, (1, 2), equal), plain)  # 1 / the batch's pixels: the mean
    first = hierarchical_loss([level[:1] for level in logits], label[:1], (1, 2))
    only_first = torch.tensor([[2 / float(labelled[0][0]), 2 / float(labelled[1][0]), 0, 0], [0, 0, 0, 0]])
    assert torch.allclose(hierarchical_loss(logits, label, (1, 2), only_first), first)
    # a batch's weights come from its sample names
    batch = {"name": ["a", "b"], "label": label}
    assert batch_weights(batch, None) is None
    assert batch_weights(batch, {"a": [0.5, 1, 1, 1], "b": [2, 2, 2, 2]}).tolist() == [[0.5, 1, 1, 1], [2, 2, 2, 2]]


def test_a_level_without_labels_adds_nothing():
    logits = _logits()
    label = torch.randint(0, 3, (2, 4, 4, 4), generator=torch.Generator().manual_seed(2))
    label[:, 1] = UNLABELLED  # level 2 has no labelled pixel
    loss = hierarchical_loss(logits, label, (1, 2))
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits[0], label[:, 0].long()))
    loss.backward()
    assert torch.count_nonzero(logits[1].grad) == 0 and torch.isfinite(loss)


def _state(lr=0.1) -> TrainState:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    return TrainState(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0))


def test_should_stop_by_epochs_and_by_time_budget():
    settings = TrainSettings(data="d", preset="p", epochs=3, time_budget_minutes=1.0)
    state = _state()
    assert should_stop(settings, state, "cpu") == (False, "")
    state.epoch, state.spent_s, state.last_epoch_s = 1, 40.0, 25.0  # 40 + 25 > 60: the next epoch would overrun
    stop, why = should_stop(settings, state, "cpu")
    assert stop and "time budget" in why
    state.last_epoch_s = 15.0
    assert not should_stop(settings, state, "cpu")[0]
    state.epoch = 3
    assert should_stop(settings, state, "cpu") == (True, "")


def test_a_time_budget_fits_the_cosine_to_the_epochs_that_fit_and_a_restore_keeps_it():
    from h2crop_core.recipe import WarmupCosine
    from pipelines.training.steps import fit_to_budget

    settings = TrainSettings(data="d", preset="p", epochs=47, steps=1500, lr=0.1, min_lr=0.001, time_budget_minutes=2.0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    state = TrainState(
        model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(1500, 50, 0.01, 0.01))
    )
    for _ in range(32):  # the first epoch: 32 optimizer steps in 30 s
        optimizer.step()
        state.scheduler.step()
    state.epoch, state.last_epoch_s, state.spent_s = 1, 30.0, 30.0
    line = fit_to_budget(state, settings, "cpu")
    assert (
        line == "time budget: epoch 1 took 30 s, so 4 epochs fit in 2 min: the cosine now ends at step 128 (was 1500)"
    )
    assert state.fitted_epochs == 4 and fit_to_budget(state, settings, "cpu") == ""  # once
    for _ in range(128 - 32):
        optimizer.step()
        state.scheduler.step()
    assert state.scheduler.get_last_lr()[0] == pytest.approx(settings.min_lr)  # the cosine ended within the budget
    state.epoch = 4
    assert should_stop(settings, state, "cpu") == (True, "time budget: the schedule fitted to it ended after epoch 4")
    restored = _state(lr=0.1)
    restored.scheduler = torch.optim.lr_scheduler.LambdaLR(restored.optimizer, WarmupCosine(1500, 50, 0.01, 0.01))
    restored.load_state_dict(state.state_dict())
    assert restored.scheduler.lr_lambdas[0].total == 128 and restored.fitted_epochs == 4
    unhurried = TrainSettings(data="d", preset="p", epochs=47, steps=1500, lr=0.1, time_budget_minutes=60.0)
    state.fitted_epochs, state.epoch = 0, 1
    assert fit_to_budget(state, unhurried, "cpu") == ""  # the whole schedule fits: unchanged


def test_gradient_accumulation_steps_every_kth_batch():
    state = _state()

    class Wrapped(torch.nn.Module):  # train_step calls model(**core.inputs(batch)) like the real model
        def __init__(self, linear):
            super().__init__()
            self.linear = linear

        def inputs(self, batch):
            return {"x": batch["x"]}

        def forward(self, x):
            return [self.linear(x.movedim(1, -1)).movedim(-1, 1)]

    state.model = Wrapped(state.model)
    batch = {"x": torch.randn(2, 3, 4, 4), "label": torch.zeros(2, 4, 4, 4, dtype=torch.uint8)}
    before = state.core.linear.weight.detach().clone()
    train_step(state, batch, (1,), step=1, grad_accum=2)
    assert torch.equal(before, state.core.linear.weight)  # accumulating: no step yet
    train_step(state, batch, (1,), step=2, grad_accum=2)
    assert not torch.equal(before, state.core.linear.weight) and state.scheduler.last_epoch == 1


def _uneven(rank: int, world: int) -> dict:
    from torch.distributed.algorithms.join import Join
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    ddp = DistributedDataParallel(model)
    steps = 3 if rank == 0 else 1  # uneven shards: rank 1 runs out of batches first
    with Join([ddp]):
        for step in range(steps):
            x = torch.randn(4, 3, generator=torch.Generator().manual_seed(10 * rank + step))
            ddp(x).pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
    before = {"step": float(optimizer.state_dict()["state"][0]["step"]), "lr": scheduler.get_last_lr()[0]}
    align_optimizer_state(optimizer, scheduler, steps, "cpu")
    state = optimizer.state_dict()["state"]
    return {
        "before": before,
        "moments": [state[i]["exp_avg"] for i in sorted(state)],
        "step": float(state[0]["step"]),
        "lr": scheduler.get_last_lr()[0],
        "weights": [p.detach() for p in model.parameters()],
    }


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    """One gloo rank running every DDP case of this module in turn (one pair of processes for them all:
    starting them is most of the time); each case's result saved as ``<case><rank>.pt``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    for name, case in (("uneven", _uneven), ("accumulating", _accumulating), ("freezing", _freezing)):
        torch.save(case(rank, world), Path(out) / f"{name}{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """The DDP cases run on two gloo ranks (processes): ``two_ranks(case)`` -> what each rank saved."""
    out = tmp_path_factory.mktemp("ddp")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(out)), nprocs=2, join=True)
    return lambda case: [torch.load(out / f"{case}{r}.pt") for r in range(2)]


def test_replicas_are_identical_after_uneven_shards(two_ranks):
    ranks = two_ranks("uneven")
    assert ranks[0]["before"] != ranks[1]["before"], "the ranks' optimizer states differed before aligning"
    assert ranks[0]["step"] == ranks[1]["step"] == 3.0
    assert math.isclose(ranks[0]["lr"], ranks[1]["lr"])
    for a, b in zip(ranks[0]["moments"] + ranks[0]["weights"], ranks[1]["moments"] + ranks[1]["weights"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class _PixelModel(torch.nn.Module):
    """A per-pixel linear model with the real model's calling convention (``inputs(batch)``, level logits)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)

    def inputs(self, batch):
        return {"x": batch["x"]}

    def forward(self, x):
        return [self.linear(x.movedim(1, -1)).movedim(-1, 1)]


def _accumulating(rank: int, world: int) -> dict:
    """One rank of a 2-rank DDP epoch through ``train_epoch`` with ``grad_accum`` 2: rank 0 has 4 batches,
    rank 1 has 3 (it flushes a 1-batch accumulation while rank 0 still accumulates two)."""
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    core = _PixelModel()
    optimizer = torch.optim.AdamW(core.parameters(), lr=0.1)
    state = TrainState(
        DistributedDataParallel(core), optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    )
    settings = TrainSettings(data="d", preset="p", grad_accum=2, flip_rotate=False, cutmix_p=0.0)
    batches = []
    for i in range(4 if rank == 0 else 3):
        generator = torch.Generator().manual_seed(10 * rank + i)
        label = torch.randint(0, 2, (2, 4, 4, 4), generator=generator).to(torch.uint8)
        batches.append({"x": torch.randn(2, 3, 4, 4, generator=generator), "label": label, "name": ["a", "b"]})
    train_epoch(state, batches, settings, (1,), factor=3, generator=torch.Generator().manual_seed(0))
    moments = optimizer.state_dict()["state"]
    return {
        "moments": [moments[i][k] for i in sorted(moments) for k in ("exp_avg", "exp_avg_sq")],
        "weights": [p.detach() for p in core.parameters()],
        "lr": state.scheduler.get_last_lr()[0],
        "step": float(moments[0]["step"]),
    }


def test_replicas_are_identical_after_uneven_shards_with_gradient_accumulation(two_ranks):
    ranks = two_ranks("accumulating")
    assert ranks[0]["step"] == ranks[1]["step"] == 2.0  # both stepped twice: equal counts hid the difference
    for a, b in zip(ranks[0]["moments"] + ranks[0]["weights"], ranks[1]["moments"] + ranks[1]["weights"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # bit-identical


def test_early_stopping_counts_epochs_since_the_best_validation_score():
    settings = TrainSettings(data="d", preset="p", epochs=50, patience=3)
    state = _state()
    state.epoch, state.best_epoch, state.best_score = 5, 4, 0.6  # epoch 4 was the best so far
    assert not should_stop(settings, state, "cpu")[0]
    state.epoch = 7  # epochs 5, 6, 7 without a better score
    stop, why = should_stop(settings, state, "cpu")
    assert stop and "early stopping" in why and "epoch 4" in why
    assert not should_stop(TrainSettings(data="d", preset="p", epochs=50, patience=0), state, "cpu")[0]
    restored = _state()
    restored.load_state_dict(state.state_dict())  # a resumed run counts from the same best epoch
    assert (restored.best_epoch, restored.epoch) == (4, 7)


def _state_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class _Toy(torch.nn.Module):
    """A stream with BatchNorm and a head, called like the real model (the real one: test_finetune's run)."""

    def __init__(self):
        super().__init__()
        self.s2 = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
        self.heads = torch.nn.Conv2d(4, 3, 1)

    def inputs(self, batch):
        return {"x": batch["x"]}

    def forward(self, x):
        return [self.heads(self.s2(x))]


def _freezing(rank: int, world: int) -> dict:
    """Two DDP runs through train_epoch on 2 gloo ranks, each rank its own batches: s2 frozen for epoch 1 then
    trained, and s2 frozen for the whole run (AdamW weight decay 0.5)."""
    from torch.nn.parallel import DistributedDataParallel

    saved = {}
    for epochs in (1, 0):
        torch.manual_seed(0)
        core = _Toy()
        settings = TrainSettings(data="d", preset="p", freeze="s2", freeze_epochs=epochs, flip_rotate=False, cutmix_p=0)
        freeze = Freeze.of(core, settings)  # before DDP, as make_state does
        optimizer = torch.optim.AdamW(core.parameters(), lr=0.1, weight_decay=0.5)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        state = TrainState(DistributedDataParallel(core), optimizer, scheduler, freeze=freeze)
        snapshots = [_state_of(core)]
        for epoch in range(2):
            generator = torch.Generator().manual_seed(100 * epoch + rank)  # each rank its own data
            batches = []
            for _ in range(2):
                label = torch.randint(0, 3, (2, 4, 4, 4), generator=generator).to(torch.uint8)
                batches.append({"x": torch.randn(2, 3, 4, 4, generator=generator), "label": label, "name": ["a", "b"]})
            train_epoch(state, batches, settings, (1,), factor=3, generator=generator)
            state.epoch += 1
            snapshots.append(_state_of(core))
            if epoch == 0:
                touched = any(p in optimizer.state for p in core.s2.parameters())  # moments, steps, weight decay
                flags = {p.requires_grad for p in core.s2.parameters()}
        saved[epochs] = {"snapshots": snapshots, "touched": touched, "requires_grad": flags}
    return saved


def test_a_frozen_stream_stays_bit_identical_under_ddp_and_trains_all_reduced_once_unfrozen(two_ranks):
    ranks = two_ranks("freezing")
    for epochs in (1, 0):
        start, first, second = ranks[0][epochs]["snapshots"]
        stream = [name for name in start if name.startswith("s2.")]
        assert "s2.1.running_mean" in stream  # BatchNorm statistics are kept too
        for name in stream:
            assert torch.equal(first[name], start[name]), (epochs, name)  # frozen in epoch 1, weight decay 0.5
        assert not ranks[0][epochs]["touched"]  # AdamW never saw a gradient for them
        assert not torch.equal(first["heads.weight"], start["heads.weight"])
        moved = [name for name in stream if not torch.equal(second[name], start[name])]
        if epochs:  # frozen by dropped gradients (DDP all-reduces them once unfrozen): trains in epoch 2
            assert ranks[0][epochs]["requires_grad"] == {True} and {"s2.0.weight", "s2.1.running_mean"} <= set(moved)
        else:  # the whole run: no gradients at all, never moves
            assert ranks[0][epochs]["requires_grad"] == {False} and moved == []
        for ours, theirs in zip(ranks[0][epochs]["snapshots"], ranks[1][epochs]["snapshots"]):
            for name in ours:  # each rank its own data, the same weights: every gradient was all-reduced
                assert torch.equal(ours[name], theirs[name]), (epochs, name)
