"""Make the pictures of docs/tasks.md with the ``perceiver`` command.

Run from the repository root: ``.venv/bin/python docs/make_figures.py``. It needs scikit-image (test data) and
PyAV. Models, inputs and raw outputs go to ``out/docs/`` (git-ignored); the two pictures are copied to ``docs/``.

No pretrained weights can be had offline, so the models are small and randomly initialised; what they predict is
noise. The flow picture therefore shows the *ground truth* of the motorcycle pair, rendered by ``perceiver flow
--show-gt`` with the same colour code as a prediction.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import perceiver_io
from perceiver_io.tasks.flow_utils import stereo_motorcycle_pair, write_flo

DOCS = Path(__file__).resolve().parent
WORK = Path("out/docs")
SMALL_ENCODER = dict(
    num_blocks=1, num_self_attends_per_block=2, num_self_attention_heads=4, num_cross_attention_heads=1
)


def save_random_model(folder: Path, head: str, **config) -> Path:
    """A freshly initialised model (seed 0) saved as a transformers folder."""
    torch.manual_seed(0)
    model = getattr(perceiver_io, head)(perceiver_io.PerceiverConfig.from_dict({**SMALL_ENCODER, **config}))
    model.save_pretrained(folder)
    return folder


def motorcycle_inputs() -> tuple[Path, Path, Path]:
    """scikit-image's Middlebury motorcycle pair as PNG frames and its ground-truth flow as .flo."""
    left, right, flow = stereo_motorcycle_pair()
    paths = WORK / "motorcycle_left.png", WORK / "motorcycle_right.png", WORK / "motorcycle_gt.flo"
    Image.fromarray(left.astype(np.uint8)).save(paths[0])
    Image.fromarray(right.astype(np.uint8)).save(paths[1])
    write_flo(paths[2], flow)
    return paths


def astronaut_pan(path: Path, frames: int = 16, fps: int = 25, sample_rate: int = 48_000) -> Path:
    """A public-domain test clip: a 4:3 window panning across scikit-image's astronaut photo (NASA), with a
    220 → 880 Hz chirp as its soundtrack; H.264 + AAC in MP4, as a phone would write it."""
    import av
    from skimage.data import astronaut

    photo = astronaut()
    t = np.arange(frames * sample_rate // fps) / sample_rate
    chirp = 0.5 * np.sin(2 * np.pi * (220 * t + 330 * t**2 / t[-1]))
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"crf": "18"})
        video.width, video.height, video.pix_fmt = 400, 300, "yuv420p"
        audio = container.add_stream("aac", rate=sample_rate, layout="mono")
        for k in range(frames):
            window = np.ascontiguousarray(photo[100:400, 6 * k : 6 * k + 400])
            container.mux(video.encode(av.VideoFrame.from_ndarray(window, format="rgb24")))
        container.mux(video.encode())
        samples = av.AudioFrame.from_ndarray(chirp.astype(np.float32)[None], format="flt", layout="mono")
        samples.sample_rate = sample_rate
        container.mux(audio.encode(samples))
        container.mux(audio.encode())
    return path


def perceiver(*args: object) -> None:
    """Run the installed console script, echoing the command line as docs/tasks.md shows it."""
    argv = [str(a) for a in args]
    print("$ perceiver " + shlex.join(argv), flush=True)
    script = Path(sys.executable).with_name("perceiver")
    subprocess.run([str(script), *argv], check=True)


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    flow_model = save_random_model(
        WORK / "models" / "flow", "PerceiverForOpticalFlow", num_latents=32, d_latents=64, d_model=322
    )
    multimodal_model = save_random_model(
        WORK / "models" / "multimodal",
        "PerceiverForMultimodalAutoencoding",
        num_latents=32,
        d_latents=64,
        d_model=704,
        num_frames=4,
        image_size=16,
        output_shape=[1, 4, 64, 64],
        output_num_channels=64,
        _label_trainable_num_channels=64,
        id2label={i: f"LABEL_{i}" for i in range(700)},
    )

    left, right, gt = motorcycle_inputs()
    perceiver("flow", "-m", flow_model, left, right, "-o", WORK / "motorcycle", "--gt", gt, "--show-gt")
    shutil.copyfile(WORK / "motorcycle_gt.png", DOCS / "flow_motorcycle_gt.png")

    clip = astronaut_pan(WORK / "astronaut_pan.mp4")
    perceiver("autoencode", "-m", multimodal_model, clip, "-o", WORK / "autoencode")
    shutil.copyfile(WORK / "autoencode" / "strip.png", DOCS / "autoencode_strip.png")

    for picture in ("flow_motorcycle_gt.png", "autoencode_strip.png"):
        print(f"{DOCS / picture}: {(DOCS / picture).stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
