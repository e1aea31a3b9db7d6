"""The `perceiver autoencode` and `perceiver flow` tasks end to end, against the model's own forward.

Released architectures with random weights (speed does not depend on the values):

- autoencode: seconds per clip (16 × 224², 128 chunks: the encoder once, the decoder per chunk) beside one
  colab-style forward (encoder + decoder on one chunk's points); ``chunks × forward`` is what re-running the
  whole model per chunk would cost.
- flow: seconds per tile of `optical_flow` on a frame of ``--tiles`` tiles beside one forward on one tile
  (368 × 496); the goal is a ratio ≤ 1.2.

    .venv/bin/python benchmarks/tasks.py [--clips 2] [--tiles 4] [--flow-repeats 2] [--peak-repeats 10]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from common import RESULTS, interleaved, machine, write_json
from machine import add_peak_arguments, cpu_description, describe, describe_peaks, peaks_for

import perceiver_io
from perceiver_io import PerceiverConfig
from perceiver_io.adapters.image import patches_for_flow
from perceiver_io.tasks.autoencode import ClipGeometry, autoencode
from perceiver_io.tasks.flow_utils import tile_origins
from perceiver_io.tasks.optical_flow import default_overlap, optical_flow


def bench_autoencode(clips: int, chunks: int) -> dict[str, Any]:
    """Seconds per clip of `autoencode` and of one forward on one chunk's points (medians of ``clips`` interleaved
    rounds after a warm-up)."""
    torch.manual_seed(0)
    model = perceiver_io.PerceiverForMultimodalAutoencoding(PerceiverConfig.released("multimodal-perceiver")).eval()
    g = ClipGeometry.from_config(model.config)
    rng = np.random.default_rng(0)
    video = rng.random((g.num_frames, g.frame_size, g.frame_size, 3), dtype=np.float32)
    audio = rng.random(g.audio_samples, dtype=np.float32) * 2 - 1
    inputs = {
        "image": torch.from_numpy(video).permute(0, 3, 1, 2)[None],
        "audio": torch.from_numpy(audio)[None, :, None],
        "label": torch.zeros(1, g.num_labels),
    }
    points = {
        "image": torch.arange(g.pixels).tensor_split(chunks)[0],
        "audio": torch.arange(g.audio_patches).tensor_split(chunks)[0],
    }

    def forward() -> None:
        with torch.no_grad():
            model(inputs=inputs, subsampled_output_points=points)

    times = interleaved({"clip": lambda: autoencode(model, video, audio, chunks=chunks), "forward": forward}, clips)
    clip, fwd = times["clip"]["seconds"], times["forward"]["seconds"]
    return {
        "chunks": chunks,
        "clips": clips,
        "clip_s": clip,
        "forward_one_chunk_s": fwd,
        "rerun_model_per_chunk_s": fwd * chunks,
    }


def bench_flow(tiles: int, repeats: int) -> dict[str, Any]:
    """Seconds per tile of `optical_flow` on a frame cut into ``tiles`` tiles (a row of them), and of one forward
    (medians of ``repeats`` interleaved rounds after a warm-up)."""
    torch.manual_seed(0)
    model = perceiver_io.PerceiverForOpticalFlow(PerceiverConfig.released("optical-flow-perceiver")).eval()
    h, w = (int(s) for s in model.config.train_size)
    overlap = default_overlap((h, w))
    width = w + (tiles - 1) * (w - overlap)
    count = len(set(tile_origins(h, width, (h, w), overlap)))
    rng = np.random.default_rng(0)
    frame1 = rng.random((h, width, 3), dtype=np.float32) * 255
    frame2 = np.roll(frame1, 3, axis=1)
    tile = torch.from_numpy(np.stack([frame1[:, :w], frame2[:, :w]]))
    patches = patches_for_flow((tile / 255 * 2 - 1).permute(0, 3, 1, 2)[None])

    def forward() -> None:
        with torch.no_grad():
            model(inputs=patches)

    times = interleaved({"task": lambda: optical_flow(model, frame1, frame2), "forward": forward}, repeats)
    tile_s, forward_s = times["task"]["seconds"] / count, times["forward"]["seconds"]
    return {
        "tiles": count,
        "tile_s": tile_s,
        "forward_s": forward_s,
        "ratio": tile_s / forward_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2, help="autoencode clips timed (0: skip autoencode)")
    parser.add_argument("--chunks", type=int, default=128, help="decoding chunks per clip (the colab's 128)")
    parser.add_argument("--tiles", type=int, default=4, help="tiles in the flow frame (0: skip flow)")
    parser.add_argument("--flow-repeats", type=int, default=2, help="timed rounds of the flow task and forward")
    add_peak_arguments(parser)
    args = parser.parse_args()
    peaks = peaks_for(args)
    cpu = cpu_description()
    result: dict[str, Any] = {"machine": machine(), "cpu": cpu, "peaks": peaks}
    print(f"CPU: {describe(cpu)}\n{describe_peaks(peaks)}")
    if args.clips:
        a = result["autoencode"] = bench_autoencode(args.clips, args.chunks)
        print(
            f"autoencode (multimodal-perceiver, fp32): {a['clip_s']:.1f} s/clip, "
            f"one forward on one chunk {a['forward_one_chunk_s']:.2f} s (×{a['chunks']} = "
            f"{a['rerun_model_per_chunk_s']:.1f} s re-running the model per chunk)"
        )
    if args.tiles:
        f = result["flow"] = bench_flow(args.tiles, args.flow_repeats)
        print(
            f"flow (optical-flow-perceiver, fp32): {f['tile_s']:.2f} s/tile over {f['tiles']} tiles, "
            f"forward {f['forward_s']:.2f} s: ratio {f['ratio']:.2f}"
        )
    write_json(RESULTS / "tasks.json", result)


if __name__ == "__main__":
    main()
