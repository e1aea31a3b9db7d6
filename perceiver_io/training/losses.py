"""Losses and label-space augmentation: smoothed CE, MixUp + CutMix (ImageNet), byte masking and MLM loss."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # label of positions the MLM loss skips (torch's and transformers' convention)
PERCEIVER_SPECIAL_IDS = (0, 1, 2, 3, 4, 5)  # [PAD] [BOS] [EOS] [MASK] [CLS] [SEP]; bytes are ids 6..261
PERCEIVER_MASK_ID = 3
PERCEIVER_VOCAB_SIZE = 262


def smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """Mean softmax cross-entropy against ``(1 - smoothing)·targets + smoothing/K``, DeepMind's ImageNet loss.

    Args:
        logits: (B, K).
        targets: (B,) int class ids, or (B, K) probabilities (e.g. from :func:`mixup_cutmix`).
    Returns:
        scalar, computed in float32 at least.
    """
    num_classes = logits.shape[-1]
    if targets.dim() == 1:
        targets = F.one_hot(targets, num_classes)
    targets = targets.to(torch.promote_types(logits.dtype, torch.float32))
    smoothed = (1.0 - smoothing) * targets + smoothing / num_classes
    log_probs = F.log_softmax(logits.to(smoothed.dtype), dim=-1)
    return -(smoothed * log_probs).sum(dim=-1).mean()


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _cutmix_masks(n: int, height: int, width: int, generator: torch.Generator | None) -> torch.Tensor:
    """(n, H, W) float masks, 1 inside a box: DeepMind's ``cutmix_padding`` (from nfnets / edward2).

    The box side is ``int(sqrt(1 - U)·side)`` with U ~ U(0, 1), centred at a uniform pixel, and clipped at the
    border; each half-side is rounded down, so the box spans ``2·(side // 2)`` pixels before clipping.
    """
    device = _device(generator)
    centre_x = torch.randint(0, width, (n,), generator=generator, device=device)
    centre_y = torch.randint(0, height, (n,), generator=generator, device=device)
    side_ratio = torch.sqrt(1.0 - torch.rand(n, generator=generator, device=device))
    half_w = (side_ratio * width).long() // 2
    half_h = (side_ratio * height).long() // 2
    x1, x2 = (centre_x - half_w).clamp(0, width), (centre_x + half_w).clamp(0, width)
    y1, y2 = (centre_y - half_h).clamp(0, height), (centre_y + half_h).clamp(0, height)
    ys = torch.arange(height, device=device)[None, :, None]
    xs = torch.arange(width, device=device)[None, None, :]
    inside_y = (ys >= y1[:, None, None]) & (ys < y2[:, None, None])
    inside_x = (xs >= x1[:, None, None]) & (xs < x2[:, None, None])
    return (inside_y & inside_x).float()


def mixup_cutmix(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    alpha: float = 0.2,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp on the first half of the batch, CutMix on the second, as DeepMind's ``my_mixup_cutmix``.

    Row ``i`` is mixed with row ``B-1-i`` (its partner; for odd B the middle row is its own and stays as is),
    so the batch keeps its size. DeepMind instead reads twice the data and mixes each example with one from
    the other half of a 2B batch; with a shuffled batch the pairs have the same distribution, at half the
    reads. MixUp: ``x = r·x_i + (1-r)·x_partner``, r ~ Beta(α, α). CutMix: ``x_i`` inside a random box,
    ``x_partner`` outside; r is the box's share of the pixels. The target is ``r·onehot(y_i) +
    (1-r)·onehot(y_partner)``. All draws come from ``generator`` (the global RNG if None), so the result is a
    function of the generator's state.

    Args:
        images: (B, C, H, W) float.
        labels: (B,) int class ids.
    Returns:
        images (B, C, H, W) and soft targets (B, num_classes) float32 whose rows sum to 1.
    """
    if not images.is_floating_point():
        raise ValueError(f"mixup_cutmix needs float images, got {images.dtype}")
    batch, _, height, width = images.shape
    n_mixup = batch // 2

    # torch has no Beta sampler that takes a generator; a numpy Generator seeded from it keeps the draw
    # reproducible from the torch generator alone.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=_device(generator)))
    mixup_ratio = torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, n_mixup)).float()
    mixup_ratio = mixup_ratio.to(images.device)
    cut_masks = _cutmix_masks(batch - n_mixup, height, width, generator).to(images.device)
    ratio = torch.cat([mixup_ratio, cut_masks.mean(dim=(1, 2))])  # (B,) share of the row's own image

    weight = torch.cat([mixup_ratio[:, None, None, None].expand(-1, 1, height, width), cut_masks[:, None]])
    weight = weight.to(images.dtype)  # (B, 1, H, W)
    mixed = weight * images + (1 - weight) * images.flip(0)

    own = F.one_hot(labels, num_classes).float()
    targets = ratio[:, None] * own + (1 - ratio[:, None]) * own.flip(0)
    return mixed, targets


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not ``IGNORE_INDEX`` (-100).

    Args:
        logits: (B, T, V).
        labels: (B, T) int; -100 where no prediction is scored.
    Returns:
        scalar (float32 at least); 0 when no position is scored, where ``F.cross_entropy`` would give NaN.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_logits = flat_logits.to(torch.promote_types(flat_logits.dtype, torch.float32))
    total = F.cross_entropy(flat_logits, labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)


def check_masking(mask_prob: float, mean_span: float) -> None:
    """Raise ``ValueError`` unless ``mask_prob`` is in [0, 1] and ``mean_span`` >= 1."""
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob={mask_prob}; expected a probability in [0, 1]")
    if not mean_span >= 1.0:
        raise ValueError(f"mean_span={mean_span}; expected a mean span length >= 1 byte")


@functools.lru_cache(maxsize=32)  # a pure function of two settings, asked for every batch
def span_start_rate(mask_prob: float, mean_span: float) -> float:
    """Per-position probability of starting a span such that a fraction ``mask_prob`` of an unbounded sequence
    is covered, for span lengths ~ Geometric(1/mean_span) on {1, 2, …} (mean ``mean_span``).

    A position is left uncovered iff no span starting k ≤ 0 positions before it reaches it; spans start
    independently with rate r and reach k positions on with probability q^k (q = 1 - 1/mean_span), so
    ``1 - mask_prob = Π_k (1 - r·q^k)``, solved for r by bisection (monotone in r).
    """
    q = 1.0 - 1.0 / mean_span
    reach = q ** np.arange(int(np.log(1e-12) / np.log(q)) + 1) if q > 0 else np.ones(1)
    low, high = 0.0, 1.0
    for _ in range(60):
        rate = (low + high) / 2
        covered = 1.0 - np.prod(1.0 - rate * reach)
        low, high = (rate, high) if covered < mask_prob else (low, rate)
    return (low + high) / 2


def _span_selection(
    shape: torch.Size, mask_prob: float, mean_span: float, generator: torch.Generator | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Covered positions (B, T) bool, and for each the start index (B, T) of the span that reaches furthest."""
    starts = torch.rand(shape, generator=generator, device=device) < span_start_rate(mask_prob, mean_span)
    uniform = torch.rand(shape, generator=generator, device=device).clamp(min=1e-12)
    q = 1.0 - 1.0 / mean_span  # > 0: called for mean_span > 1 only
    lengths = 1 + torch.floor(uniform.log() / math.log(q)).long()  # Geometric(1 - q) on {1, 2, ...}
    positions = torch.arange(shape[-1], device=device)
    reach = torch.where(starts, positions + lengths, torch.full_like(positions, -1).expand(shape))
    furthest, start_index = reach.cummax(dim=-1)  # the span covering t is the one that reaches past t the most
    return furthest > positions, start_index


def mask_bytes(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mask_prob: float = 0.15,
    generator: torch.Generator | None = None,
    special_ids: tuple[int, ...] = PERCEIVER_SPECIAL_IDS,
    mask_id: int = PERCEIVER_MASK_ID,
    vocab_size: int = PERCEIVER_VOCAB_SIZE,
    mean_span: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking for the byte-level MLM, of single bytes or (``mean_span`` > 1) of contiguous spans.

    ``mean_span`` 1: each position that is attended (``attention_mask`` 1) and not a special id is selected
    independently with probability ``mask_prob`` (a Bernoulli draw per position, as transformers'
    ``DataCollatorForLanguageModeling``; BERT's original picked a fixed count per sequence). A selected
    position becomes ``mask_id`` with probability 0.8, a uniformly drawn non-special id (a byte, 6..261) with
    probability 0.1, and stays as is otherwise.

    ``mean_span`` > 1: spans of Geometric(1/mean_span) bytes (mean ``mean_span``, SpanBERT-style but
    unclipped) start independently at the rate of :func:`span_start_rate`, so that about ``mask_prob`` of the
    positions are covered; special and padded positions inside a span stay unselected. As in SpanBERT the
    80/10/10 choice is made once per span (a random replacement draws each byte of the span anew).

    Args:
        input_ids: (B, T) int.
        attention_mask: (B, T), 1/True for real tokens, 0/False for padding.
    Returns:
        masked_ids (B, T) and labels (B, T): the original id where selected, -100 elsewhere.
    Raises:
        ValueError: ``mask_prob`` outside [0, 1] or ``mean_span`` < 1.
    """
    check_masking(mask_prob, mean_span)
    device = _device(generator)
    ids = input_ids.to(device)
    special = torch.isin(ids, torch.tensor(special_ids, device=device))
    eligible = attention_mask.to(device).bool() & ~special

    # Full-shape draws in a fixed order keep the result a function of the generator state.
    if mean_span == 1.0:
        select = torch.rand(ids.shape, generator=generator, device=device) < mask_prob
        action = torch.rand(ids.shape, generator=generator, device=device)
    else:
        select, span_of = _span_selection(ids.shape, mask_prob, mean_span, generator, device)
        action = torch.rand(ids.shape, generator=generator, device=device).gather(-1, span_of)
    select &= eligible
    non_special = torch.tensor([i for i in range(vocab_size) if i not in special_ids], device=device)
    random_ids = non_special[torch.randint(0, len(non_special), ids.shape, generator=generator, device=device)]

    masked = torch.where(select & (action < 0.8), torch.full_like(ids, mask_id), ids)
    masked = torch.where(select & (action >= 0.8) & (action < 0.9), random_ids, masked)
    labels = torch.where(select, ids, torch.full_like(ids, IGNORE_INDEX))
    return masked.to(input_ids.device), labels.to(input_ids.device)
