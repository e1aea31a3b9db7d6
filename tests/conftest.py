"""Shared test helpers: small configs for every head and weight randomisation."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and buffer a random value of sane scale, norms included (so a mis-mapped
    LayerNorm or BatchNorm is caught), and return the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        r = torch.randn(p.shape, generator=g)
        if "layernorm" in name or "norm" in name.split(".")[-2]:
            p.copy_(1 + 0.3 * r if name.endswith("weight") else 0.3 * r)
        elif p.dim() >= 2 and "embeddings" not in name and "latents" not in name:
            p.copy_(r * p[0].numel() ** -0.5)
        else:
            p.copy_(0.5 * r)
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(0.1 * torch.randn(b.shape, generator=g))
        elif name.endswith("running_var"):
            b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return model.eval()


def assert_close_to_reference(ours: torch.Tensor, ref: torch.Tensor, *, atol_scale: float = 1e-4, rel_l2: float = 1e-5):
    """The suite's parity criterion: max|Δ| ≤ atol_scale·max(1, max|ref|) and ‖Δ‖/‖ref‖ ≤ rel_l2."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    delta = (ours.double() - ref.double()).abs()
    bound = atol_scale * max(1.0, ref.abs().max().item())
    assert delta.max().item() <= bound, f"max|Δ|={delta.max().item():.3g} > {bound:.3g}"
    rel = (delta.norm() / ref.double().norm().clamp_min(1e-30)).item()
    assert rel <= rel_l2, f"‖Δ‖/‖ref‖={rel:.3g} > {rel_l2:.3g}"
    return delta.max().item(), rel


# Small configurations, one per head, in transformers' field names.
SMALL_CONFIGS: dict[str, dict] = {
    "PerceiverForMaskedLM": dict(
        num_latents=8,
        d_latents=32,
        d_model=32,
        num_blocks=2,
        num_self_attends_per_block=2,
        num_self_attention_heads=4,
        num_cross_attention_heads=2,
        qk_channels=16,
        v_channels=32,
        max_position_embeddings=24,
        vocab_size=262,
    ),
    "PerceiverForSequenceClassification": dict(
        num_latents=8,
        d_latents=32,
        d_model=24,
        num_blocks=2,
        num_self_attends_per_block=2,
        num_self_attention_heads=4,
        num_cross_attention_heads=2,
        max_position_embeddings=24,
        num_labels=3,
    ),
    "PerceiverForImageClassificationLearned": dict(
        num_latents=8,
        d_latents=32,
        d_model=512,
        num_blocks=2,
        num_self_attends_per_block=2,
        num_self_attention_heads=4,
        num_cross_attention_heads=1,
        image_size=8,
        num_labels=5,
    ),
    "PerceiverForImageClassificationFourier": dict(
        num_latents=8,
        d_latents=32,
        d_model=261,
        num_blocks=2,
        num_self_attends_per_block=2,
        num_self_attention_heads=4,
        num_cross_attention_heads=1,
        num_labels=5,
    ),
    "PerceiverForImageClassificationConvProcessing": dict(
        num_latents=8,
        d_latents=32,
        d_model=322,
        num_blocks=2,
        num_self_attends_per_block=2,
        num_self_attention_heads=4,
        num_cross_attention_heads=1,
        num_labels=5,
    ),
    "PerceiverForOpticalFlow": dict(
        num_latents=8,
        d_latents=32,
        d_model=322,
        num_blocks=1,
        num_self_attends_per_block=2,
        num_self_attention_heads=4,
        num_cross_attention_heads=1,
        train_size=[8, 12],
    ),
    "PerceiverForMultimodalAutoencoding": dict(
        num_latents=8,
        d_latents=32,
        d_model=704,
        num_blocks=1,
        num_self_attends_per_block=2,
        num_self_attention_heads=4,
        num_cross_attention_heads=1,
        num_frames=2,
        image_size=4,
        audio_samples_per_frame=32,
        samples_per_patch=16,
        output_shape=[1, 2, 16, 16],
        output_num_channels=16,
        num_labels=5,
        _label_trainable_num_channels=8,
    ),
}


def small_inputs(head: str, batch: int = 2, seed: int = 0) -> dict:
    """Inputs for ``head`` under its SMALL_CONFIGS entry, with padding masks where the head takes them."""
    g = torch.Generator().manual_seed(seed)
    if head in ("PerceiverForMaskedLM", "PerceiverForSequenceClassification"):
        ids = torch.randint(6, 262, (batch, 24), generator=g)
        mask = torch.ones(batch, 24, dtype=torch.long)
        mask[1, 15:] = 0  # second example padded
        ids[1, 15:] = 0
        return dict(inputs=ids, attention_mask=mask)
    if head == "PerceiverForImageClassificationLearned":
        return dict(inputs=torch.randn(batch, 3, 8, 8, generator=g))
    if head == "PerceiverForImageClassificationFourier":
        return dict(inputs=torch.randn(batch, 3, 12, 10, generator=g))
    if head == "PerceiverForImageClassificationConvProcessing":
        return dict(inputs=torch.randn(batch, 3, 32, 32, generator=g))
    if head == "PerceiverForOpticalFlow":
        return dict(inputs=torch.randn(batch, 2, 27, 8, 12, generator=g))
    if head == "PerceiverForMultimodalAutoencoding":
        inputs = {
            "image": torch.randn(batch, 2, 3, 16, 16, generator=g),
            "audio": torch.randn(batch, 64, 1, generator=g),
            "label": torch.zeros(batch, 5),
        }
        points = {"image": torch.arange(100, 300), "audio": torch.arange(0, 4)}
        return dict(inputs=inputs, subsampled_output_points=points)
    raise KeyError(head)


@pytest.fixture(scope="session")
def transformers_module():
    return pytest.importorskip("transformers")
