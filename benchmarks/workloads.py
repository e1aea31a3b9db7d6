"""Training and checking workloads of the six released architectures: model folders (random weights, read by both
libraries), real-shaped inputs, targets and a loss that both libraries' outputs go through alike.

Each architecture comes at its released size or as a small configuration of the same head (``small=True``: a few
latents and channels, inputs of a few pixels or bytes) for smoke runs and quick device checks. The losses are the
project's training losses (``perceiver_io.training``): masked-LM cross-entropy on 15 % of the bytes, cross-entropy
for the image classifiers, end-point error for flow, and the Kinetics autoencoding loss on subsampled output
points for the multimodal model. They are computed here from ``logits``, outside either model, so that both
libraries are timed on the very same loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import MODEL_CACHE, model_folder

import perceiver_io
from perceiver_io.released import RELEASED
from perceiver_io.tasks.optical_flow import FLOW_SCALE_FACTOR
from perceiver_io.training.losses import masked_lm_loss
from perceiver_io.training.multimodal import LOSS_WEIGHTS

_SMALL_COMMON = dict(num_latents=8, d_latents=32, num_self_attention_heads=4, num_cross_attention_heads=1)
# Small configurations of each released architecture (same head, same preprocessing), in config field names.
SMALL: dict[str, dict[str, Any]] = {
    "language-perceiver": dict(
        _SMALL_COMMON,
        d_model=32,
        num_blocks=1,
        num_self_attends_per_block=2,
        num_cross_attention_heads=2,
        qk_channels=16,
        v_channels=32,
        max_position_embeddings=32,
    ),
    "vision-perceiver-learned": dict(
        _SMALL_COMMON, d_model=512, num_blocks=2, num_self_attends_per_block=2, image_size=8, num_labels=5
    ),
    "vision-perceiver-fourier": dict(
        _SMALL_COMMON, d_model=261, num_blocks=2, num_self_attends_per_block=2, num_labels=5
    ),
    "vision-perceiver-conv": dict(_SMALL_COMMON, d_model=322, num_blocks=2, num_self_attends_per_block=2, num_labels=5),
    "optical-flow-perceiver": dict(
        _SMALL_COMMON, d_model=322, num_blocks=1, num_self_attends_per_block=2, train_size=[8, 12]
    ),
    "multimodal-perceiver": dict(
        _SMALL_COMMON,
        d_model=704,
        num_blocks=1,
        num_self_attends_per_block=2,
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
# Output points decoded per training step, as perceiver_io.training.multimodal.MultimodalTask's defaults.
MULTIMODAL_POINTS = {"image": 4096, "audio": 256}


def folder(name: str, small: bool = False) -> Path:
    """A transformers-layout folder with random weights (cached in ``$PERCEIVER_BENCH_CACHE``)."""
    if not small:
        return model_folder(name)
    path = MODEL_CACHE / f"small-{name}"
    if not (path / "model.safetensors").is_file():
        torch.manual_seed(0)
        model = getattr(perceiver_io, RELEASED[name].head)(perceiver_io.PerceiverConfig.from_dict(SMALL[name]))
        if name == "optical-flow-perceiver":
            # Zero-initialised output layer (DeepMind's): random weights give the comparisons something to see.
            torch.nn.init.normal_(model.perceiver.decoder.final.weight, std=0.05)
        model.save_pretrained(path)
    return path


def load(library: str, name: str, small: bool = False) -> torch.nn.Module:
    """Model ``name`` from ``library`` ('transformers' or 'perceiver_io'), float32, train mode."""
    if library == "transformers":
        import transformers

        module = transformers
    elif library == "perceiver_io":
        module = perceiver_io
    else:
        raise ValueError(f"library must be 'transformers' or 'perceiver_io', got {library!r}")
    return getattr(module, RELEASED[name].head).from_pretrained(folder(name, small)).train()


def _shape(name: str, small: bool) -> dict[str, Any]:
    """Sizes of one example: sequence length, image side(s), flow tile, multimodal clip geometry."""
    if not small:
        return dict(
            seq=2048,
            image=(224, 224),
            flow=(368, 496),
            frames=16,
            clip_side=224,
            audio=30720,
            spp=16,
            labels=1000 if name.startswith("vision") else 700,
        )
    image = {"vision-perceiver-fourier": (12, 10), "vision-perceiver-conv": (32, 32)}.get(name, (8, 8))
    return dict(seq=32, image=image, flow=(8, 12), frames=2, clip_side=16, audio=64, spp=16, labels=5)


def batch(name: str, size: int, small: bool = False, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """(keyword arguments of the forward, targets for ``loss``) for ``size`` examples of model ``name``."""
    g = torch.Generator().manual_seed(seed)
    s = _shape(name, small)
    if name == "language-perceiver":
        ids = torch.randint(6, 262, (size, s["seq"]), generator=g)
        scored = torch.rand(size, s["seq"], generator=g) < 0.15  # the MLM masking rate
        inputs = dict(inputs=ids, attention_mask=torch.ones(size, s["seq"], dtype=torch.long))
        return inputs, {"labels": ids.masked_fill(~scored, -100)}
    if name.startswith("vision"):
        images = torch.randn(size, 3, *s["image"], generator=g)
        return dict(inputs=images), {"labels": torch.randint(0, s["labels"], (size,), generator=g)}
    if name == "optical-flow-perceiver":
        h, w = s["flow"]
        inputs = dict(inputs=torch.randn(size, 2, 27, h, w, generator=g))
        return inputs, {"flow": 5 * torch.randn(size, h, w, 2, generator=g)}
    side, frames = s["clip_side"], s["frames"]
    pixels, patches = frames * side * side, s["audio"] // s["spp"]
    points = {
        "image": torch.randperm(pixels, generator=g)[: min(MULTIMODAL_POINTS["image"], pixels // 4)].sort().values,
        "audio": torch.randperm(patches, generator=g)[: min(MULTIMODAL_POINTS["audio"], patches // 2)].sort().values,
    }
    modalities = {
        "image": torch.rand(size, frames, 3, side, side, generator=g),
        "audio": torch.randn(size, s["audio"], 1, generator=g),
        "label": torch.zeros(size, s["labels"]),  # replaced by the model's mask token
    }
    targets = {"points": points, "labels": torch.randint(0, s["labels"], (size,), generator=g), "spp": s["spp"]}
    return dict(inputs=modalities, subsampled_output_points=points), targets


def loss(name: str, logits: Any, inputs: dict[str, Any], targets: dict[str, Any]) -> torch.Tensor:
    """The training loss of ``name`` (scalar, float32) from the forward's ``logits``."""
    if name == "language-perceiver":
        return masked_lm_loss(logits, targets["labels"])
    if name.startswith("vision"):
        return F.cross_entropy(logits.float(), targets["labels"])
    if name == "optical-flow-perceiver":
        # End-point error in pixels, as perceiver_io.training.flow.FlowTask.loss.
        return torch.linalg.vector_norm(logits.float() * FLOW_SCALE_FACTOR - targets["flow"], dim=-1).mean()
    # 0.03·L1(video) + L1(audio) + 1e-4·CE(label) on the decoded points, as training.multimodal.MultimodalTask.loss.
    clip, points = inputs["inputs"], targets["points"]
    n = clip["image"].shape[0]
    pixels = clip["image"].permute(0, 1, 3, 4, 2).reshape(n, -1, 3)[:, points["image"]]
    samples = clip["audio"].reshape(n, -1, targets["spp"])[:, points["audio"]].reshape(n, -1)
    return (
        LOSS_WEIGHTS["image"] * F.l1_loss(logits["image"].float(), pixels)
        + LOSS_WEIGHTS["audio"] * F.l1_loss(logits["audio"].float(), samples)
        + LOSS_WEIGHTS["label"] * F.cross_entropy(logits["label"].float(), targets["labels"])
    )


def to_device(tree: Any, device: torch.device | str) -> Any:
    """Every tensor in (nested dicts of) ``tree`` moved to ``device``."""
    if isinstance(tree, dict):
        return {k: to_device(v, device) for k, v in tree.items()}
    return tree.to(device) if torch.is_tensor(tree) else tree
