"""LAMB as DeepMind builds it from optax, its weight-decay groups, and the paper's learning-rate schedules.

DeepMind's ImageNet chain (``perceiver/train/utils.py``) is, per step::

    clip_by_global_norm(10) → scale_by_adam(0.9, 0.999, eps=1e-6) → add_weight_decay(0.1)
    → scale_by_trust_ratio() → scale_by_schedule(lr) → scale(-1)

:class:`Lamb` performs that chain with one torch optimizer step; :func:`param_groups` reproduces which
parameters the weight decay skips; the schedules are optax's, evaluated at the 0-based update count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

# DeepMind skips every parameter of a module whose Haiku path contains 'layer_norm' or 'batchnorm'; in torch
# the module's type says the same thing without relying on attribute names.
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm*, and their lazy variants
)


def _norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    # Per-tensor L2 norms as one vector, accumulated in float32 (as JAX does for float32 params) or float64.
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    return torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype))


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """Linear scaling rule (Goyal et al. 2017; DeepMind's ``_get_batch_scaled_lr``): base_lr·batch/256."""
    return base_lr * batch_size / 256


@torch.no_grad()
def clip_by_global_norm_(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale gradients in place to a joint L2 norm of at most ``max_norm``; returns the norm before clipping.

    optax's rule: gradients are left untouched when the norm is below ``max_norm``, otherwise multiplied by
    ``max_norm / norm``. (``torch.nn.utils.clip_grad_norm_`` instead always multiplies by
    ``min(1, max_norm / (norm + 1e-6))``, a slightly different update.)
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.linalg.vector_norm(_norms(grads))
    scale = torch.where(norm < max_norm, torch.ones_like(norm), max_norm / norm)
    torch._foreach_mul_(grads, scale)
    return norm


class Lamb(torch.optim.Optimizer):
    """LAMB exactly as DeepMind's optax chain (You et al. 2020, without LAMB's optional norm clamping).

    Per parameter ``p`` with gradient ``g`` and 1-based step ``t``::

        m ← b1·m + (1-b1)·g             v ← b2·v + (1-b2)·g²
        u ← (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + weight_decay·p
        r ← ‖p‖ / ‖u‖, or 1 when either norm is 0  (optax ``scale_by_trust_ratio`` with its defaults)
        p ← p - lr·r·u

    ``eps`` is added outside the square root, as in optax ``scale_by_adam`` (``eps_root=0``). ``weight_decay``
    is per parameter group: build the groups with :func:`param_groups`. With ``max_grad_norm`` set, each step
    first applies :func:`clip_by_global_norm_` over all groups' gradients (the chain's first link); leave it
    ``None`` if the caller clips. Norms are per tensor, so every tensor of a group must sit on one device.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = None,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"lr, eps and weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.max_grad_norm = max_grad_norm

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One LAMB update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.max_grad_norm is not None:
            clip_by_global_norm_((p for g in self.param_groups for p in g["params"]), self.max_grad_norm)
        for group in self.param_groups:
            self._update_group(group)
        return loss

    def _update_group(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        if any(p.grad.is_sparse for p in params):
            raise RuntimeError("Lamb does not support sparse gradients")
        grads = [p.grad for p in params]
        b1, b2 = group["betas"]
        m, v, bias1, bias2 = [], [], [], []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            m.append(state["exp_avg"])
            v.append(state["exp_avg_sq"])
            bias1.append(1 - b1 ** state["step"])
            bias2.append(1 - b2 ** state["step"])

        torch._foreach_mul_(m, b1)
        torch._foreach_add_(m, grads, alpha=1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - b2)

        # In-place where possible: the step holds at most two extra copies of the group's parameters.
        denom = torch._foreach_div(v, bias2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        updates = torch._foreach_div(m, bias1)
        torch._foreach_div_(updates, denom)
        del denom
        if group["weight_decay"]:
            torch._foreach_add_(updates, params, alpha=group["weight_decay"])

        param_norms = _norms(params)
        update_norms = _norms(updates)
        # A zero norm would freeze a zero-initialised parameter (‖p‖ = 0) or give 0/0: optax uses ratio 1.
        trust = torch.where(
            (param_norms > 0) & (update_norms > 0), param_norms / update_norms, torch.ones_like(param_norms)
        )
        torch._foreach_mul_(updates, list(trust.unbind()))
        torch._foreach_add_(params, updates, alpha=-group["lr"])


def param_groups(
    model: nn.Module, weight_decay: float, norm_types: tuple[type[nn.Module], ...] = NORM_TYPES
) -> list[dict]:
    """Split ``model``'s trainable parameters into ``[decayed, not decayed]`` optimizer groups.

    Not decayed, as in DeepMind's ``add_weight_decay``: biases (a module's parameter named ``bias`` or ending
    in ``_bias``, e.g. ``MultiheadAttention.in_proj_bias``; Haiku's ``b``) and every parameter of a
    normalisation module (an instance of ``norm_types``). Everything else is decayed, including positional
    embeddings and embedding tables (DeepMind's default ``decay_pos_embs=True``). A parameter shared by
    several modules is excluded if any of its owners excludes it, and appears once.

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay}, {"params": [...], "weight_decay": 0.0}]``
    """
    excluded: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, norm_types)
        for name, p in module.named_parameters(recurse=False):
            if is_norm or name == "bias" or name.endswith("_bias"):
                excluded.add(id(p))
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if id(p) not in excluded], "weight_decay": weight_decay},
        {"params": [p for p in trainable if id(p) in excluded], "weight_decay": 0.0},
    ]


def _cosine_decay(count: int, decay_steps: int, init_value: float, end_value: float) -> float:
    # optax.cosine_decay_schedule: the count is clamped, so the value stays at end_value after decay_steps.
    if decay_steps <= 0:
        return end_value
    progress = min(max(count, 0), decay_steps) / decay_steps
    return end_value + (init_value - end_value) * 0.5 * (1 + math.cos(math.pi * progress))


def constant_cosine_schedule(step: int, total_steps: int, base_lr: float, constant_fraction: float = 0.5) -> float:
    """DeepMind's ``'constant_cosine'``: ``base_lr`` for ``int(constant_fraction·total_steps)`` steps, then a
    cosine decay to 0 at ``total_steps`` (and 0 after). ``step`` is the 0-based update count; no warmup."""
    if total_steps <= 0 or not 0.0 <= constant_fraction <= 1.0:
        raise ValueError(
            f"need total_steps > 0 and 0 <= constant_fraction <= 1, got {total_steps}, {constant_fraction}"
        )
    constant_steps = int(constant_fraction * total_steps)
    if step < constant_steps:
        return base_lr
    return _cosine_decay(step - constant_steps, total_steps - constant_steps, base_lr, 0.0)


def warmup_cosine_schedule(
    step: int,
    total_steps: int,
    base_lr: float,
    warmup_steps: int,
    init_lr: float = 0.0,
    end_lr: float = 0.0,
) -> float:
    """``optax.warmup_cosine_decay_schedule``: linear from ``init_lr`` (step 0) to ``base_lr`` at
    ``warmup_steps``, then cosine to ``end_lr`` at ``total_steps`` (warmup included). The MLM recipe: 1 K
    warmup steps, 500 K total."""
    if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps <= total_steps and total_steps > 0, got {warmup_steps}, {total_steps}"
        )
    if step < warmup_steps:
        return init_lr + (base_lr - init_lr) * step / warmup_steps
    return _cosine_decay(step - warmup_steps, total_steps - warmup_steps, base_lr, end_lr)


def constant_cosine_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, constant_fraction: float = 0.5
) -> LambdaLR:
    """:func:`constant_cosine_schedule` as a ``LambdaLR`` scaling each group's initial lr.

    Call ``scheduler.step()`` after every ``optimizer.step()``: update ``k`` (0-based) then uses
    ``lr·schedule(k)``, as optax's ``scale_by_schedule`` does.
    """
    return LambdaLR(
        optimizer,
        partial(
            constant_cosine_schedule,
            total_steps=total_steps,
            base_lr=1.0,
            constant_fraction=constant_fraction,
        ),
    )


def warmup_cosine_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> LambdaLR:
    """:func:`warmup_cosine_schedule` (from 0, to 0) as a ``LambdaLR`` scaling each group's initial lr."""
    return LambdaLR(
        optimizer,
        partial(warmup_cosine_schedule, total_steps=total_steps, base_lr=1.0, warmup_steps=warmup_steps),
    )
