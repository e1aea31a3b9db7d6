"""The ``perceiver train`` subcommand: ``add_arguments`` fills its parser, ``run`` executes it.

Examples::

    perceiver train mnist --out runs/mnist
    perceiver train mnist --set train.steps=200 --set model.num_latents=64
    perceiver train my_recipe.toml --resume
    torchrun --nproc_per_node=2 --no-python perceiver train mnist --out runs/ddp
    torchrun --nproc_per_node=2 -m perceiver_io.training.cli mnist --out runs/ddp   # the same
"""

from __future__ import annotations

import argparse
import json
import sys

import torch.distributed as dist

from perceiver_io.allocator import keep_freed_memory
from perceiver_io.training.tasks import build, load_recipe
from perceiver_io.training.trainer import Trainer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``perceiver train``."""
    parser.add_argument("recipe", help="a recipe TOML file, or a built-in recipe name: mnist, mlm, imagenet, flow")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="TABLE.KEY=VALUE",
        help="override one setting, e.g. train.steps=500 or model.num_latents=64 (repeatable)",
    )
    parser.add_argument("--out", help="output folder (overrides train.out_dir)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Train as ``args`` says; print a one-line JSON summary (rank 0) and return the exit status."""
    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"train.out_dir={json.dumps(args.out)}")
    if args.no_progress:
        overrides.append("train.progress=false")
    task, config = build(load_recipe(args.recipe, overrides))
    try:
        trainer = Trainer(task, config)
        summary = trainer.fit(resume=args.resume)
        if trainer.ctx.is_main:
            print(json.dumps(summary))
    finally:
        if dist.is_initialized():  # joined by the Trainer under torchrun
            dist.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m perceiver_io.training.cli`` (e.g. under torchrun)."""
    parser = argparse.ArgumentParser(prog="perceiver train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    keep_freed_memory()  # as the `perceiver` command does (perceiver_io.allocator)
    sys.exit(main())
