"""Training parts checked against independent references: a numpy re-derivation of DeepMind's optax LAMB
chain, closed-form schedules and losses, exact pixel counts for CutMix, and bit-exact resumption."""

from __future__ import annotations

import math
import os
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from perceiver_io.training import checkpoint
from perceiver_io.training.data import ShardedBatches, load_mnist
from perceiver_io.training.losses import (
    mask_bytes,
    masked_lm_loss,
    mixup_cutmix,
    smoothed_cross_entropy,
    span_start_rate,
)
from perceiver_io.training.optim import (
    Lamb,
    constant_cosine_schedule,
    constant_cosine_scheduler,
    param_groups,
    scaled_lr,
    warmup_cosine_schedule,
    warmup_cosine_scheduler,
)

# LAMB


def reference_lamb(params, targets, decayed, *, steps, lr_at, weight_decay, max_norm, b1=0.9, b2=0.999, eps=1e-6):
    """DeepMind's chain in plain numpy float64, on the loss sum_k ||p_k - t_k||^2 (gradient 2 (p_k - t_k)):
    clip_by_global_norm → scale_by_adam → add_weight_decay → scale_by_trust_ratio → schedule → scale(-1)."""
    params = {k: v.copy() for k, v in params.items()}
    mu = {k: np.zeros_like(v) for k, v in params.items()}
    nu = {k: np.zeros_like(v) for k, v in params.items()}
    for count in range(steps):
        grads = {k: 2.0 * (params[k] - targets[k]) for k in params}
        if max_norm is not None:
            global_norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
            if global_norm >= max_norm:
                grads = {k: g / global_norm * max_norm for k, g in grads.items()}
        new_params = {}
        for k, g in grads.items():
            mu[k] = b1 * mu[k] + (1 - b1) * g
            nu[k] = b2 * nu[k] + (1 - b2) * g * g
            mu_hat = mu[k] / (1 - b1 ** (count + 1))
            nu_hat = nu[k] / (1 - b2 ** (count + 1))
            update = mu_hat / (np.sqrt(nu_hat) + eps)
            if k in decayed:
                update = update + weight_decay * params[k]
            p_norm, u_norm = np.linalg.norm(params[k]), np.linalg.norm(update)
            ratio = 1.0 if p_norm == 0.0 or u_norm == 0.0 else p_norm / u_norm
            new_params[k] = params[k] - lr_at(count) * ratio * update
        params = new_params
    return params


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.pos_emb = nn.Parameter(torch.randn(5, 3))


@pytest.mark.parametrize("max_norm", [None, 0.5])
def test_lamb_matches_numpy_optax_chain(max_norm):
    torch.manual_seed(0)
    model = Tiny().double()
    with torch.no_grad():
        model.proj.bias.zero_()  # ‖p‖ = 0 on the first step: optax's ratio 1, not a frozen parameter
    g = torch.Generator().manual_seed(1)
    targets = {k: torch.randn(p.shape, generator=g, dtype=torch.float64) for k, p in model.named_parameters()}
    targets["norm.bias"] = model.norm.bias.detach().clone()  # zero gradient, not decayed: ‖u‖ = 0 every step
    start = {k: p.detach().numpy().copy() for k, p in model.named_parameters()}

    steps, lr, wd = 6, 0.05, 0.1
    opt = Lamb(param_groups(model, wd), lr=lr, max_grad_norm=max_norm)
    sched = constant_cosine_scheduler(opt, total_steps=steps)
    for _ in range(steps):
        opt.zero_grad()
        loss = sum(((p - targets[k]) ** 2).sum() for k, p in model.named_parameters())
        loss.backward()
        opt.step()
        sched.step()

    # constant for int(0.5·6) = 3 updates, then cosine over the remaining 3, written out independently
    def lr_at(count):
        return lr if count < 3 else lr * 0.5 * (1 + math.cos(math.pi * (count - 3) / 3))

    expected = reference_lamb(
        start,
        {k: v.numpy() for k, v in targets.items()},
        decayed={"proj.weight", "pos_emb"},
        steps=steps,
        lr_at=lr_at,
        weight_decay=wd,
        max_norm=max_norm,
    )
    for k, p in model.named_parameters():
        np.testing.assert_allclose(p.detach().numpy(), expected[k], rtol=1e-10, atol=1e-12, err_msg=k)
    assert torch.equal(model.norm.bias, torch.from_numpy(start["norm.bias"]))  # ratio 1 · zero update, no NaN
    assert not np.allclose(expected["proj.bias"], 0.0)  # the zero-initialised bias did move


def test_param_groups_exclude_exactly_biases_and_norms():
    class Scale(nn.Module):  # a norm the caller declares through norm_types
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(8))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.pos_emb = nn.Parameter(torch.zeros(5, 8))
            self.proj = nn.Linear(8, 8)
            self.layer_norm_named_linear = nn.Linear(8, 8)  # the name says norm, the type does not
            self.blocks = nn.Sequential(nn.LayerNorm(8), nn.Conv1d(8, 8, 3), nn.BatchNorm1d(8), nn.GroupNorm(2, 8))
            self.attn = nn.MultiheadAttention(8, 2)
            self.scale = Scale()
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.embed.weight  # tied: listed once
            self.frozen = nn.Parameter(torch.ones(3), requires_grad=False)

    net = Net()
    names = {id(p): n for n, p in net.named_parameters()}
    decay, no_decay = param_groups(net, 0.1)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert sorted(names[id(p)] for p in decay["params"]) == sorted(
        [
            "embed.weight",
            "pos_emb",
            "proj.weight",
            "layer_norm_named_linear.weight",
            "blocks.1.weight",
            "attn.in_proj_weight",
            "attn.out_proj.weight",
            "scale.weight",
        ]
    )
    assert sorted(names[id(p)] for p in no_decay["params"]) == sorted(
        [
            "proj.bias",
            "layer_norm_named_linear.bias",
            "blocks.0.weight",
            "blocks.0.bias",
            "blocks.1.bias",
            "blocks.2.weight",
            "blocks.2.bias",
            "blocks.3.weight",
            "blocks.3.bias",
            "attn.in_proj_bias",
            "attn.out_proj.bias",
        ]
    )
    _, custom_no_decay = param_groups(net, 0.1, norm_types=(nn.LayerNorm, Scale))
    assert "scale.weight" in {names[id(p)] for p in custom_no_decay["params"]}


# Schedules


def test_constant_cosine_closed_form():
    base, total = 2e-3, 1000
    values = [constant_cosine_schedule(s, total, base) for s in (0, 500, 750, 1000, 1200)]
    assert values == pytest.approx([base, base, base * 0.5, 0.0, 0.0], abs=1e-15)
    assert constant_cosine_schedule(499, total, base) == base
    assert scaled_lr(5e-4, 1024) == pytest.approx(2e-3)  # the paper's ImageNet lr at batch 1024


def test_warmup_cosine_closed_form():
    base, total, warmup = 1.25e-3, 1000, 100
    values = [warmup_cosine_schedule(s, total, base, warmup) for s in (0, 50, 100, 550, 1000)]
    assert values == pytest.approx([0.0, base / 2, base, base / 2, 0.0], abs=1e-15)


@pytest.mark.parametrize("kind", ["constant_cosine", "warmup_cosine"])
def test_lambda_lr_factories_follow_the_schedule(kind):
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.3)
    total = 20
    if kind == "constant_cosine":
        sched = constant_cosine_scheduler(opt, total)
        expected = [constant_cosine_schedule(k, total, 0.3) for k in range(total)]
    else:
        sched = warmup_cosine_scheduler(opt, total, warmup_steps=4)
        expected = [warmup_cosine_schedule(k, total, 0.3, 4) for k in range(total)]
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])  # the lr update k (0-based) uses
        opt.step()
        sched.step()
    assert seen == pytest.approx(expected, abs=1e-15)


# Losses


def test_smoothed_cross_entropy_formula_and_torch_label_smoothing():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 7, (6,), generator=g)
    soft = torch.softmax(torch.randn(6, 7, generator=g, dtype=torch.float64), dim=-1)

    log_p = logits.numpy() - np.log(np.exp(logits.numpy()).sum(-1, keepdims=True))
    manual = -np.mean(np.sum((0.9 * soft.numpy() + 0.1 / 7) * log_p, axis=-1))
    assert smoothed_cross_entropy(logits, soft).item() == pytest.approx(manual, rel=1e-12)

    ours = smoothed_cross_entropy(logits, labels).item()
    assert ours == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1).item(), rel=1e-12)
    assert ours == pytest.approx(smoothed_cross_entropy(logits, F.one_hot(labels, 7)).item(), rel=1e-12)


def test_mixup_cutmix_targets_and_pixel_fractions():
    batch, size, classes = 8, 16, 10
    # image i is the constant i + 1, so every output pixel tells which source image it came from
    images = (torch.arange(batch, dtype=torch.float32) + 1)[:, None, None, None].expand(batch, 3, size, size)
    labels = torch.arange(batch)
    mixed, targets = mixup_cutmix(images, labels, classes, generator=torch.Generator().manual_seed(0))

    assert mixed.shape == images.shape and targets.shape == (batch, classes)
    torch.testing.assert_close(targets.sum(-1), torch.ones(batch))
    assert (targets >= 0).all()
    for i in range(batch):
        own, partner = i + 1.0, batch - i  # row i is paired with row B-1-i
        r = targets[i, i].item()
        assert targets[i, batch - 1 - i].item() == pytest.approx(1 - r, abs=1e-6)
        if i < batch // 2:  # MixUp: a uniform blend with weight r
            torch.testing.assert_close(mixed[i], torch.full_like(mixed[i], r * own + (1 - r) * partner))
        else:  # CutMix: a rectangle of the own image, the partner elsewhere, r = its pixel share
            from_own = mixed[i, 0] == own
            assert bool((from_own | (mixed[i, 0] == partner)).all())
            assert from_own.float().mean().item() == pytest.approx(r, abs=1e-7)
            rows, cols = from_own.any(1), from_own.any(0)
            assert torch.equal(from_own, rows[:, None] & cols[None, :])

    again, again_targets = mixup_cutmix(images, labels, classes, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, mixed) and torch.equal(again_targets, targets)
    _, other_targets = mixup_cutmix(images, labels, classes, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other_targets, targets)


def test_mask_bytes_rates_and_protected_positions():
    g = torch.Generator().manual_seed(0)
    batch, length = 64, 512
    ids = torch.randint(6, 262, (batch, length), generator=g)
    specials = torch.rand(batch, length, generator=g) < 0.05
    ids[specials] = torch.randint(1, 6, (int(specials.sum()),), generator=g)
    lengths = torch.randint(100, length + 1, (batch,), generator=g)
    attention = torch.arange(length)[None, :] < lengths[:, None]
    ids[~attention] = 0

    masked, labels = mask_bytes(ids, attention.long(), generator=torch.Generator().manual_seed(1))
    protected = ~attention | (ids < 6)
    assert bool((labels[protected] == -100).all()) and torch.equal(masked[protected], ids[protected])

    selected = labels != -100
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(masked[~selected], ids[~selected])
    assert selected.sum().item() / (~protected).sum().item() == pytest.approx(0.15, abs=0.01)

    to_mask = (masked[selected] == 3).float().mean().item()
    kept = (masked[selected] == ids[selected]).float().mean().item()
    replaced = masked[selected][(masked[selected] != 3) & (masked[selected] != ids[selected])]
    assert to_mask == pytest.approx(0.8, abs=0.03) and kept == pytest.approx(0.1, abs=0.03)
    assert replaced.numel() / selected.sum().item() == pytest.approx(0.1, abs=0.03)
    assert bool(((replaced >= 6) & (replaced < 262)).all())

    repeat = mask_bytes(ids, attention.long(), generator=torch.Generator().manual_seed(1))
    assert torch.equal(repeat[0], masked) and torch.equal(repeat[1], labels)


def _runs(selected: torch.Tensor) -> list[tuple[int, int, int]]:
    """(row, start, length) of each maximal run of True in a (B, T) bool tensor."""
    runs = []
    for row, line in enumerate(selected.tolist()):
        start = None
        for t, on in enumerate([*line, False]):
            if on and start is None:
                start = t
            elif not on and start is not None:
                runs.append((row, start, t - start))
                start = None
    return runs


@pytest.mark.parametrize("mean_span", [2.0, 3.0, 5.0])
def test_span_start_rate_gives_the_covered_fraction(mean_span):
    # Closed form for an unbounded sequence: P(uncovered) = prod_k (1 - r q^k); and for a fixed span length
    # of 1 (mean_span 1) the start rate is the masking rate itself.
    q = 1 - 1 / mean_span
    rate = span_start_rate(0.15, mean_span)
    assert 1 - np.prod(1 - rate * q ** np.arange(2000)) == pytest.approx(0.15, abs=1e-9)
    # Union bound (coverage <= r·m) and 1 - r·q^k <= exp(-r·q^k) bracket the rate.
    assert 0.15 / mean_span < rate < -math.log(1 - 0.15) / mean_span
    assert span_start_rate(0.15, 1.0) == pytest.approx(0.15, abs=1e-9)


def test_span_masking_rate_lengths_and_one_choice_per_span():
    ids = torch.randint(6, 262, (64, 1024), generator=torch.Generator().manual_seed(0))
    attention = torch.ones_like(ids)
    masked, labels = mask_bytes(ids, attention, 0.15, torch.Generator().manual_seed(1), mean_span=3.0)
    selected = labels != -100
    assert selected.float().mean().item() == pytest.approx(0.15, abs=0.01)
    assert torch.equal(labels[selected], ids[selected]) and torch.equal(masked[~selected], ids[~selected])
    # Runs merge where spans overlap, so they are at least as long as the spans (mean 3; single bytes: ~1.18).
    assert np.mean([n for _, _, n in _runs(selected)]) > 3.0

    # At a low rate spans rarely touch: runs are then spans, of mean length mean_span (Geometric), and each
    # span is wholly [MASK], wholly kept or wholly random bytes, in BERT's 80/10/10 proportions (a run of two
    # touching spans may mix kinds).
    masked, labels = mask_bytes(ids, attention, 0.02, torch.Generator().manual_seed(2), mean_span=4.0)
    runs = _runs(labels != -100)
    assert np.mean([n for _, _, n in runs]) == pytest.approx(4.0, rel=0.08)
    kinds = []
    for row, start, n in runs:
        span, original = masked[row, start : start + n], ids[row, start : start + n]
        changed = span != original
        kind = "mask" if (span == 3).all() else "kept" if not changed.any() else "random"
        kinds.append(kind if kind != "random" or not (span == 3).any() else "mixed")
    share = {k: kinds.count(k) / len(kinds) for k in ("mask", "kept", "random", "mixed")}
    assert share["mask"] == pytest.approx(0.8, abs=0.05) and share["kept"] == pytest.approx(0.1, abs=0.04)
    assert share["mixed"] < 0.05


def test_span_masking_protects_specials_and_padding_and_rejects_bad_settings():
    ids = torch.randint(6, 262, (8, 256), generator=torch.Generator().manual_seed(0))
    ids[:, ::7] = 5  # [SEP] every 7 bytes, inside many spans
    attention = (torch.arange(256) < 200).long().expand(8, -1)
    masked, labels = mask_bytes(ids, attention, 0.3, torch.Generator().manual_seed(1), mean_span=6.0)
    protected = (ids == 5) | (attention == 0)
    assert bool((labels[protected] == -100).all()) and torch.equal(masked[protected], ids[protected])
    assert (labels != -100).any()
    with pytest.raises(ValueError, match=r"mean_span=0\.5"):
        mask_bytes(ids, attention, 0.15, mean_span=0.5)
    with pytest.raises(ValueError, match=r"mask_prob=1\.5"):
        mask_bytes(ids, attention, 1.5)


def test_masked_lm_loss_is_the_mean_over_scored_positions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g, dtype=torch.float64)
    labels = torch.full((2, 5), -100)
    labels[0, 1], labels[1, 3], labels[1, 4] = 4, 0, 10
    log_p = torch.log_softmax(logits, -1)
    manual = -(log_p[0, 1, 4] + log_p[1, 3, 0] + log_p[1, 4, 10]) / 3
    assert masked_lm_loss(logits, labels).item() == pytest.approx(manual.item(), rel=1e-12)
    assert masked_lm_loss(logits, torch.full((2, 5), -100)).item() == 0.0


# Checkpoints


def make_run(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.5), nn.LayerNorm(16), nn.Linear(16, 3))
    opt = Lamb(param_groups(model, 0.1), lr=1e-2, max_grad_norm=1.0)
    sched = constant_cosine_scheduler(opt, total_steps=12)
    batches = ShardedBatches(40, 8, seed=3)
    return model, opt, sched, batches


def train_steps(model, opt, sched, batches, n):
    """n updates whose randomness comes from every global RNG a training loop touches; returns the draws."""
    data = torch.randn(40, 6, generator=torch.Generator().manual_seed(9))
    draws = []
    for _ in range(n):
        idx = next(iter(batches))
        # numpy's legacy global RNG and python's, as third-party augmentation code uses them
        noise = float(np.random.rand()) + random.random()  # noqa: NPY002
        draws.append(noise)
        loss = model(data[idx] + noise).square().mean()  # dropout: torch RNG
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return draws


def test_checkpoint_resume_is_bit_exact(tmp_path):
    model, opt, sched, batches = make_run(seed=0)
    train_steps(model, opt, sched, batches, 7)  # crosses an epoch boundary (5 batches per epoch)
    path = tmp_path / "state.pt"
    checkpoint.save_training_state(
        path,
        model=model,
        optimizer=opt,
        scheduler=sched,
        step=7,
        data_state=batches.state_dict(),
        extra={"a": 7},
    )
    draws = train_steps(model, opt, sched, batches, 4)
    after = {k: v.clone() for k, v in model.state_dict().items()}

    model2, opt2, sched2, batches2 = make_run(seed=123)
    state = checkpoint.load_training_state(path, model2, opt2, sched2)
    batches2.load_state_dict(state["data_state"])
    assert state["step"] == 7 and state["extra"] == {"a": 7}
    assert train_steps(model2, opt2, sched2, batches2, 4) == draws
    for k, v in model2.state_dict().items():
        assert torch.equal(v, after[k]), k
    assert isinstance(torch.load(path, weights_only=True), dict)


def test_checkpoint_restores_rng_streams(tmp_path):
    model, opt, sched, batches = make_run(seed=0)
    path = tmp_path / "state.pt"
    checkpoint.save_training_state(
        path, model=model, optimizer=opt, scheduler=sched, step=0, data_state=batches.state_dict()
    )
    first = (random.random(), np.random.rand(3), torch.rand(3))  # noqa: NPY002
    checkpoint.load_training_state(path, model)
    second = (random.random(), np.random.rand(3), torch.rand(3))  # noqa: NPY002
    assert first[0] == second[0] and np.array_equal(first[1], second[1]) and torch.equal(first[2], second[2])


@pytest.mark.parametrize("failure", ["rename", "write"])
def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch, failure):
    model, opt, sched, batches = make_run(seed=0)
    path = tmp_path / "state.pt"
    kwargs = dict(model=model, optimizer=opt, scheduler=sched, data_state=batches.state_dict())
    checkpoint.save_training_state(path, step=1, **kwargs)

    def fail_rename(*_):
        raise OSError("simulated crash before the rename")

    def fail_half_written(obj, f):
        f.write(b"partial bytes")
        raise OSError("simulated crash mid-write")

    if failure == "rename":
        monkeypatch.setattr(os, "replace", fail_rename)
    else:
        monkeypatch.setattr(torch, "save", fail_half_written)
    with pytest.raises(OSError, match="simulated"):
        checkpoint.save_training_state(path, step=2, **kwargs)
    monkeypatch.undo()

    assert checkpoint.load_training_state(path, model, opt, sched)["step"] == 1
    assert os.listdir(tmp_path) == ["state.pt"]  # the temporary file is gone too


# Data


def take(batches: ShardedBatches, n: int) -> list[torch.Tensor]:
    out = []
    while len(out) < n:
        for idx in batches:
            out.append(idx)
            if len(out) == n:
                break
    return out


@pytest.mark.parametrize("consumed", [3, 10, 14])  # mid-epoch, exactly at the epoch end, in the next epoch
def test_sharded_batches_resume_gives_the_same_batches(consumed):
    batches = ShardedBatches(103, 10, seed=7)
    take(batches, consumed)
    state = batches.state_dict()
    expected = take(batches, 12)

    resumed = ShardedBatches(103, 10, seed=7)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(take(resumed, 12), expected, strict=True))
    with pytest.raises(ValueError, match="seed"):
        ShardedBatches(103, 10, seed=8).load_state_dict(state)


@pytest.mark.parametrize("drop_last", [True, False])
def test_rank_shards_partition_the_global_batch(drop_last):
    single = ShardedBatches(103, 10, seed=7, drop_last=drop_last)
    ranks = [ShardedBatches(103, 10, seed=7, rank=r, world_size=2, drop_last=drop_last) for r in range(2)]
    assert len(single) == (10 if drop_last else 11)
    epoch = list(single)
    assert len(set(torch.cat(epoch).tolist())) == len(torch.cat(epoch))  # no index twice in an epoch
    for full, shard0, shard1 in zip(epoch, *ranks, strict=True):
        rebuilt = torch.empty_like(full)
        rebuilt[0::2], rebuilt[1::2] = shard0, shard1
        assert torch.equal(rebuilt, full)
        assert sorted(torch.cat([shard0, shard1]).tolist()) == sorted(full.tolist())
    assert not torch.equal(torch.cat(epoch), torch.cat(list(single)))  # the next epoch is reshuffled


def test_load_mnist_stratified_split():
    x_train, y_train, x_val, y_val = load_mnist(split_seed=0)
    assert x_train.shape == (4500, 28, 28) and x_val.shape == (500, 28, 28)
    assert x_train.dtype == x_val.dtype == np.uint8 and y_train.dtype == np.int64
    assert np.bincount(y_val).tolist() == [50] * 10 and np.bincount(y_train).tolist() == [450] * 10
    train_rows = {row.tobytes() for row in x_train}
    assert not any(row.tobytes() in train_rows for row in x_val)
    assert np.array_equal(load_mnist(split_seed=0)[2], x_val)
    assert not np.array_equal(load_mnist(split_seed=1)[2], x_val)


def test_metrics_go_to_tensorboard_when_installed(tmp_path, monkeypatch):
    import sys
    import types

    from perceiver_io.training.trainer import MetricsLog

    scalars = []

    class FakeWriter:
        def __init__(self, log_dir):
            scalars.append(("dir", log_dir))

        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def close(self):
            scalars.append("closed")

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    log = MetricsLog(tmp_path / "metrics.jsonl", enabled=True, keep_until=0)
    log.write({"step": 3, "loss": 0.5, "eval/accuracy": 0.9})
    log.close()
    assert scalars == [("dir", str(tmp_path / "tensorboard")), ("loss", 0.5, 3), ("eval/accuracy", 0.9, 3), "closed"]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed: JSONL only
    assert MetricsLog(tmp_path / "m2.jsonl", enabled=True, keep_until=0).tensorboard is None
