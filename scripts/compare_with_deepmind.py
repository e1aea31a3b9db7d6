"""Compare our DeepMind-numerics models with outputs of DeepMind's own JAX code on the same random parameters.

DeepMind's code cannot be committed here; run it yourself (jax, jaxlib, dm-haiku, einops from PyPI) on
``random_params_from_tree(read_param_tree(<tree>.tsv), seed=0)`` and the inputs in REF_DIR, saving its outputs as
``out_<key>.npz`` (flow in pixels: the model's output × 20, as the colab reports it), then:
``python scripts/compare_with_deepmind.py REF_DIR [keys...] [--prefix P]``. With ``--prefix real_`` the inputs are
``real_<inputs>.npz`` and the outputs ``real_out_<key>.npz`` (real photos, text, frames and audio instead of noise).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from perceiver_io.adapters.image import patches_for_flow
from perceiver_io.checkpoints.haiku_trees import random_params_from_tree, read_param_tree, write_haiku_pickle
from perceiver_io.checkpoints.loading import load_model
from perceiver_io.tasks.optical_flow import FLOW_SCALE_FACTOR

TREES = Path(__file__).resolve().parents[1] / "tests" / "data" / "deepmind-param-trees"
CASES = {  # key: (tree, inputs file, has state)
    "f1": ("imagenet_fourier_position_encoding.tsv", "img_inputs", True),
    "c": ("imagenet_conv_preprocessing.tsv", "img_inputs", True),
    "l": ("imagenet_learned_position_encoding.tsv", "img_inputs", True),
    "m": ("mlm_language_perceiver_io_bytes.tsv", "mlm_inputs", False),
    "v": ("video_autoencoding.tsv", "video_inputs", False),
    "o": ("optical_flow.tsv", "flow_inputs", False),
}


def model_inputs(key: str, arrays: dict[str, np.ndarray]) -> dict:
    a0 = torch.from_numpy(arrays["arg0"])
    if key in ("f1", "c", "l"):
        return {"inputs": a0.permute(0, 3, 1, 2)}  # NHWC → NCHW
    if key == "m":
        return {"inputs": a0.long(), "attention_mask": torch.from_numpy(arrays["arg1"]).long()}
    if key == "o":
        return {"inputs": patches_for_flow(a0.permute(0, 1, 4, 2, 3))}
    video = {
        "image": a0.permute(0, 1, 4, 2, 3),
        "audio": torch.from_numpy(arrays["arg1"]),
        "label": torch.zeros(1, 700),
    }
    points = {"image": torch.arange(6272 * 3, 6272 * 4), "audio": torch.arange(15 * 3, 15 * 4)}  # colab chunk 3 of 128
    return {"inputs": video, "subsampled_output_points": points}


def in_reference_units(key: str, out: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our model's ``logits`` → {name: tensor} in the units of DeepMind's saved ``out_<key>.npz``.

    Flow: our logits (B, H, W, 2) are what DeepMind's ``FlowDecoder`` returns, the prediction / 100 (transformers'
    port returns the same), while the reference run saves pixels, as the colab does: that output
    × ``FLOW_SCALE_FACTOR`` = 20. Comparing the two unscaled gives a relative error of exactly 1 − 1/20 = 0.95.
    Multimodal: the dict {"image": (B, N, 3), "audio": (B, n), "label": (B, 700)} as is; others: {"out": logits}.
    """
    if key == "o":
        return {"out": out * FLOW_SCALE_FACTOR}
    return out if isinstance(out, dict) else {"out": out}


@torch.no_grad()
def compare(ref_dir: Path, key: str, prefix: str = "") -> None:
    tree, inputs_name, has_state = CASES[key]
    params, state = random_params_from_tree(read_param_tree(TREES / tree), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        write_haiku_pickle(Path(tmp) / "ckpt.pystate", params, state if has_state else None)
        model = load_model(Path(tmp) / "ckpt.pystate")
    out = model(**model_inputs(key, dict(np.load(ref_dir / f"{prefix}{inputs_name}.npz")))).logits
    ref = dict(np.load(ref_dir / f"{prefix}out_{key}.npz"))
    outs = in_reference_units(key, out)
    for name, r in ref.items():
        o = outs[name].double().numpy()
        delta = np.abs(o - r)
        rel = np.linalg.norm(o - r) / np.linalg.norm(r)
        print(
            f"{key:3s} {name:6s} max|ref|={np.abs(r).max():.4g} max|Δ|={delta.max():.3g} ‖Δ‖/‖ref‖={rel:.3g}",
            flush=True,
        )
    if key in ("f1", "c", "l"):  # classifiers: do both give the same top-5 classes, in the same order?
        ours, theirs = np.argsort(-outs["out"].numpy(), axis=-1)[:, :5], np.argsort(-ref["out"], axis=-1)[:, :5]
        print(f"{key:3s} top-5 same: {(ours == theirs).all(axis=-1).tolist()} (ref {theirs.tolist()})", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ref_dir", type=Path)
    parser.add_argument("keys", nargs="*", help=f"cases to run, of {' '.join(CASES)} (default: all)")
    parser.add_argument("--prefix", default="", help="prefix of the inputs and outputs files, e.g. real_")
    args = parser.parse_intermixed_args()
    if unknown := set(args.keys) - set(CASES):
        parser.error(f"unknown cases {sorted(unknown)}; choose from {list(CASES)}")
    for key in args.keys or list(CASES):
        compare(args.ref_dir, key, args.prefix)
