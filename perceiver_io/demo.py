"""`make demo`: train a small Perceiver IO (Fourier features) on real MNIST digits, then classify held-out ones."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from perceiver_io import PerceiverConfig, PerceiverForImageClassificationFourier
from perceiver_io.training.data import load_mnist
from perceiver_io.training.optim import Lamb, param_groups


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 digits (N, 28, 28) → normalised 3-channel images (N, 3, 28, 28) (the head expects RGB)."""
    return ((x.float() / 255 - 0.13) / 0.31)[:, None].expand(-1, 3, -1, -1)


def main(seconds: float = float(os.environ.get("DEMO_SECONDS", 150)), out: str = "runs/demo/model") -> None:
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    x_train, y_train, x_val, y_val = (torch.as_tensor(a) for a in load_mnist())
    config = PerceiverConfig(
        num_latents=32, d_latents=128, d_model=261, num_blocks=1, num_self_attends_per_block=3,
        num_self_attention_heads=4, num_cross_attention_heads=1, attention_probs_dropout_prob=0.0,
        id2label={i: str(i) for i in range(10)},
    )  # fmt: skip
    model = PerceiverForImageClassificationFourier(config).train()
    opt = Lamb(param_groups(model, 0.01), lr=2e-3)
    start, step = time.time(), 0
    bar = tqdm(desc=f"training on {len(x_train)} MNIST digits ({seconds:.0f} s)", unit="step")
    while time.time() - start < seconds:
        idx = torch.randint(len(x_train), (64,))
        loss = F.cross_entropy(model(inputs=to_pixels(x_train[idx])).logits, y_train[idx], label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    with torch.inference_mode():
        pred = torch.cat(
            [model(inputs=to_pixels(x_val[i : i + 100])).logits.argmax(-1) for i in range(0, len(x_val), 100)]
        )
    print(f"held-out accuracy: {(pred == y_val).float().mean().item():.1%} on {len(y_val)} digits after {step} steps")
    Path(out).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    reloaded = PerceiverForImageClassificationFourier.from_pretrained(out)
    with torch.inference_mode():
        again = reloaded(inputs=to_pixels(x_val[:12])).logits.argmax(-1)
    print(f"saved to {out}; reloaded model on 12 held-out digits:")
    print("  predicted:", " ".join(str(int(p)) for p in again))
    print("  true:     ", " ".join(str(int(t)) for t in y_val[:12]))


if __name__ == "__main__":
    main()
