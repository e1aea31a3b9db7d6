"""Export a model to ONNX or to a ``torch.export`` program (.pt2) with a dynamic batch size, checked against the
eager model before the file is written.

Each graph takes and returns named tensors (B: the batch, any size unless ``batch=`` fixes it):

==================================  =========================================  ===================================
head                                inputs                                     outputs
==================================  =========================================  ===================================
PerceiverForMaskedLM                inputs int64 (B, P), attention_mask        logits (B, P, vocab_size)
                                    int64 (B, P); P = max_position_embeddings
PerceiverForSequenceClassification  the same                                   logits (B, num_labels)
the three image classifiers         inputs float32 (B, 3, S, S), S =           logits (B, num_labels)
                                    image_size
PerceiverForOpticalFlow             inputs float32 (B, 2, 27, H, W) at the     logits (B, H, W, 2)
                                    config's train_size
PerceiverForMultimodalAutoencoding  image (B, T, 3, 4·S, 4·S), audio (B, A,    image_logits (B, Ni, 3),
                                    1), label (B, num_labels), image_points    audio_logits (B, Na·samples_per_
                                    int64 (Ni,), audio_points int64 (Na,)      patch), label_logits (B, num_labels)
PerceiverModel (no preprocessor,    inputs float32 (B, M, d_model), M any      last_hidden_state (B, num_latents,
no decoder)                                                                    d_latents)
==================================  =========================================  ===================================

Text is padded to the model's window, as the tokenizer and ``perceiver fill-mask`` pad it (mask 0 on padding).
The multimodal graph decodes one chunk of outputs per call, as ``forward`` with ``subsampled_output_points`` does:
``image_points`` and ``audio_points`` are flat indices into the video's T·4S·4S pixel grid and the A /
samples_per_patch audio patches, of any count up to ``MultimodalLayout.max_points`` (the decoder's query chunk:
16,384 queries in all, the label's one included); a clip is decoded by calling the graph once per chunk (the
encoder runs on every call). Indices outside the grid are not checked inside the graph.

The check (``check=True``) runs the written artefact, in onnxruntime or as ``torch.export.load(...).module()``,
on random inputs at batch 1 and 3 (a fixed ``batch``: at that size only; multimodal: with two point counts) and
compares every output with the eager model's: the largest difference must stay within ``PARITY_TOLERANCE`` ×
max(1, max|eager output|), or ``ExportMismatchError`` names it and nothing is written. Files are written
atomically (``checkpoints.files``). Graphs are float32 (the model's parameters must be).

ONNX needs ``pip install perceiver_io[onnx]`` (onnx, onnxscript; onnxruntime for the check).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn
from torch.export import Dim

from perceiver_io.checkpoints.files import staged_file
from perceiver_io.checks import parameter_dtype
from perceiver_io.model import PerceiverModel, PerceiverPreTrainedModel
from perceiver_io.tasks.common import IMAGE_CLASSIFIERS, eval_mode, model_device

FORMATS = ("onnx", "pt2")
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2"}
# Outputs may differ from the eager model's by float32 rounding of reordered or fused kernels (onnxruntime fuses
# layer norms, GELUs and attention; the eager model runs oneDNN): 1e-4 of the output's scale, the suite's criterion.
PARITY_TOLERANCE = 1e-4
CHECK_BATCHES = (1, 3)
TRACE_BATCH = 2  # a traced size of 1 would be taken for a constant
ONNX_EXTRA = "pip install perceiver_io[onnx]"

Inputs = tuple[torch.Tensor, ...]


class ExportMismatchError(ValueError):
    """The exported artefact's outputs differ from the eager model's by more than the tolerance."""


@dataclass(frozen=True)
class GraphSpec:
    """What one head's graph takes and returns.

    ``graph`` wraps the model with a tensors-only forward; ``inputs``/``outputs`` map names to layouts (e.g.
    "int64 (batch, 2048)"); ``dynamic`` gives each input's dynamic dimensions; ``example(batch, variant)`` builds
    valid inputs (``variant`` 0 is the traced one, 1 and 2 the checks')."""

    graph: nn.Module
    inputs: dict[str, str]
    outputs: dict[str, str]
    dynamic: dict[str, dict[int, Dim]]
    example: Callable[[int, int], Inputs]


@dataclass(frozen=True)
class ParityCheck:
    """One check run: the batch size, and for the output nearest its bound the largest |exported − eager| and
    that bound."""

    batch: int
    max_abs_diff: float
    bound: float


@dataclass(frozen=True)
class ExportResult:
    """What was written: the file, its format, head and batch size (None: any), the graph's inputs and outputs
    (name → layout), the seconds taken (export, save and check), the file's size and the checks run."""

    path: Path
    format: str
    head: str
    batch: int | None  # None: any batch size
    inputs: dict[str, str]
    outputs: dict[str, str]
    seconds: float  # export, save and check
    size_bytes: int
    checks: tuple[ParityCheck, ...]


# --------------------------------------------------------------------------------------------------------
# The graphs: each head behind a forward of tensors only


class _Logits(nn.Module):
    """An array head: inputs (B, ...) → its logits (images: (B, num_labels); flow: (B, H, W, 2))."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs=inputs).logits


class _TextLogits(_Logits):
    """A text head: inputs (B, P) byte ids, attention_mask (B, P) → logits."""

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(inputs=inputs, attention_mask=attention_mask).logits


class _Latents(_Logits):
    """A bare PerceiverModel: (B, M, d_model) → the latents (B, N, D)."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs=inputs).last_hidden_state


class _MultimodalChunk(_Logits):
    """One decoding chunk of the multimodal autoencoder: the clip and the chunk's flat output indices."""

    def forward(
        self,
        image: torch.Tensor,
        audio: torch.Tensor,
        label: torch.Tensor,
        image_points: torch.Tensor,
        audio_points: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.model(
            inputs={"image": image, "audio": audio, "label": label},
            subsampled_output_points={"image": image_points, "audio": audio_points},
        ).logits
        return logits["image"], logits["audio"], logits["label"]


# --------------------------------------------------------------------------------------------------------
# Specs per head


def _generator(variant: int) -> torch.Generator:
    return torch.Generator().manual_seed(1234 + variant)


def _batch_dims(names: tuple[str, ...], batch: int | None) -> dict[str, dict[int, Dim]]:
    if batch is not None:
        return {name: {} for name in names}
    dim = Dim("batch", min=1)
    return {name: {0: dim} for name in names}


def _text_spec(model: nn.Module, batch: int | None, out: str) -> GraphSpec:
    c = model.config
    length = c.max_position_embeddings

    def example(b: int, variant: int) -> Inputs:
        g = _generator(variant)
        ids = torch.randint(6, c.vocab_size, (b, length), generator=g)
        mask = torch.ones(b, length, dtype=torch.long)
        mask[b - 1, length // 2 :] = 0  # the last example padded: the mask must reach the graph
        return ids.masked_fill(mask == 0, 0), mask

    layout = f"int64 ({'batch' if batch is None else batch}, {length})"
    return GraphSpec(
        _TextLogits(model),
        {"inputs": layout, "attention_mask": layout + ", 1 = byte, 0 = padding"},
        {"logits": out},
        _batch_dims(("inputs", "attention_mask"), batch),
        example,
    )


def _array_spec(model: nn.Module, batch: int | None, shape: tuple[int, ...], out: str) -> GraphSpec:
    def example(b: int, variant: int) -> Inputs:
        return (torch.randn(b, *shape, generator=_generator(variant)),)

    dims = ", ".join(map(str, ("batch" if batch is None else batch, *shape)))
    return GraphSpec(
        _Logits(model), {"inputs": f"float32 ({dims})"}, {"logits": out}, _batch_dims(("inputs",), batch), example
    )


@dataclass(frozen=True)
class MultimodalLayout:
    """The multimodal graph's geometry: the clip's shapes and the largest point counts one call decodes."""

    frames: int
    size: int
    audio_samples: int
    labels: int
    image_grid: int
    audio_grid: int
    max_points: tuple[int, int]  # (image, audio): together within the decoder's query chunk

    @classmethod
    def of(cls, model: nn.Module) -> MultimodalLayout:
        c = model.config
        queries = model.perceiver.decoder.queries.providers
        image_grid, audio_grid = queries["image"].num_queries, queries["audio"].num_queries
        fixed = sum(p.num_queries for m, p in queries.items() if m not in ("image", "audio"))  # the label query
        room = model.perceiver.decoder.query_chunk_size
        # More queries than one chunk would decode in a loop whose length depends on the count (not traceable).
        audio_max = audio_grid if room is None else min(audio_grid, (room - fixed) // 2)
        image_max = image_grid if room is None else min(image_grid, room - fixed - audio_max)
        return cls(
            c.num_frames,
            4 * c.image_size,
            c.num_frames * c.audio_samples_per_frame,
            c.num_labels,
            image_grid,
            audio_grid,
            (image_max, audio_max),
        )

    def points(self, variant: int) -> tuple[int, int]:
        """Point counts of an example: an eighth of each grid (at least 2), halved for the first check."""
        counts = [max(2, min(grid // 8, most)) for grid, most in zip(self.grids, self.max_points, strict=True)]
        return tuple(max(1, n // 2) for n in counts) if variant == 1 else tuple(counts)

    @property
    def grids(self) -> tuple[int, int]:
        return self.image_grid, self.audio_grid


def _multimodal_spec(model: nn.Module, batch: int | None) -> GraphSpec:
    layout = MultimodalLayout.of(model)
    spp = model.config.samples_per_patch

    def example(b: int, variant: int) -> Inputs:
        g = _generator(variant)
        n_image, n_audio = layout.points(variant)
        return (
            torch.rand(b, layout.frames, 3, layout.size, layout.size, generator=g),
            0.3 * torch.randn(b, layout.audio_samples, 1, generator=g),
            torch.zeros(b, layout.labels),
            torch.randperm(layout.image_grid, generator=g)[:n_image],
            torch.randperm(layout.audio_grid, generator=g)[:n_audio],
        )

    dynamic = _batch_dims(("image", "audio", "label"), batch)
    (image_max, audio_max), b = layout.max_points, "batch" if batch is None else batch
    dynamic["image_points"] = {0: Dim("image_points", min=1, max=image_max)}
    dynamic["audio_points"] = {0: Dim("audio_points", min=1, max=audio_max)}
    return GraphSpec(
        _MultimodalChunk(model),
        {
            "image": f"float32 ({b}, {layout.frames}, 3, {layout.size}, {layout.size}), RGB in [0, 1]",
            "audio": f"float32 ({b}, {layout.audio_samples}, 1)",
            "label": f"float32 ({b}, {layout.labels}), ignored (replaced by the mask token)",
            "image_points": f"int64 (image_points,), flat indices into {layout.image_grid} pixels, 1..{image_max}",
            "audio_points": f"int64 (audio_points,), flat indices into {layout.audio_grid} patches, 1..{audio_max}",
        },
        {
            "image_logits": f"float32 ({b}, image_points, 3)",
            "audio_logits": f"float32 ({b}, audio_points × {spp})",
            "label_logits": f"float32 ({b}, {layout.labels})",
        },
        dynamic,
        example,
    )


def _latents_spec(model: PerceiverModel, batch: int | None) -> GraphSpec:
    c = model.config
    if model.input_preprocessor is not None or model.decoder is not None:
        raise ValueError(
            "export takes a bare PerceiverModel only without preprocessor and decoder (inputs (B, M, d_model) → "
            "latents); export the task model (PerceiverFor…) instead"
        )

    def example(b: int, variant: int) -> Inputs:
        return (torch.randn(b, 16 + 8 * variant, c.d_model, generator=_generator(variant)),)

    dynamic = _batch_dims(("inputs",), batch)
    dynamic["inputs"][1] = Dim("inputs", min=1)
    b = "batch" if batch is None else batch
    return GraphSpec(
        _Latents(model),
        {"inputs": f"float32 ({b}, inputs, {c.d_model})"},
        {"last_hidden_state": f"float32 ({b}, {c.num_latents}, {c.d_latents})"},
        dynamic,
        example,
    )


def graph_spec(model: nn.Module, batch: int | None = None) -> GraphSpec:
    """The graph of ``model`` (any perceiver_io head, or a bare PerceiverModel) with a dynamic batch (or ``batch``)."""
    if not isinstance(model, PerceiverPreTrainedModel):
        raise TypeError(f"export takes a perceiver_io model; got a {type(model).__module__}.{type(model).__name__}")
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise ValueError(f"batch must be a whole number >= 1, or None for any batch size; got {batch!r}")
    dtype = parameter_dtype(model)
    if dtype != torch.float32:
        raise TypeError(f"export writes float32 graphs; the model's parameters are {dtype}: call model.float() first")
    c, head = model.config, type(model).__name__
    b = "batch" if batch is None else batch
    if head == "PerceiverForMaskedLM":
        return _text_spec(model, batch, f"float32 ({b}, {c.max_position_embeddings}, {c.vocab_size})")
    if head == "PerceiverForSequenceClassification":
        return _text_spec(model, batch, f"float32 ({b}, {c.num_labels})")
    if head in IMAGE_CLASSIFIERS:
        return _array_spec(model, batch, (3, c.image_size, c.image_size), f"float32 ({b}, {c.num_labels})")
    if head == "PerceiverForOpticalFlow":
        h, w = (int(s) for s in c.train_size)
        return _array_spec(model, batch, (2, 27, h, w), f"float32 ({b}, {h}, {w}, 2), flow in pixels / 20")
    if head == "PerceiverForMultimodalAutoencoding":
        return _multimodal_spec(model, batch)
    if isinstance(model, PerceiverModel):
        return _latents_spec(model, batch)
    raise TypeError(f"no export for a {head}")


# --------------------------------------------------------------------------------------------------------
# Export, check, write


def _import_onnx(check: bool) -> ModuleType | None:
    """Import what ONNX export needs, and return onnxruntime when ``check`` (else None); a clear ImportError
    naming the extra when one is missing."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs both)
        import onnxscript  # noqa: F401

        ort = None
        if check:
            import onnxruntime as ort
    except ImportError as err:
        raise ImportError(f"ONNX export needs {err.name}: {ONNX_EXTRA}") from None
    return ort


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' warnings and log lines about torch internals (e.g. torchvision's operators being missing) say
    nothing a user can act on."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _device_inputs(inputs: Inputs, device: torch.device) -> Inputs:
    return tuple(x.to(device) for x in inputs)


def _check(
    run: Callable[[Inputs], list[torch.Tensor]],
    spec: GraphSpec,
    batches: tuple[int, ...],
    device: torch.device,
    what: str,
) -> tuple[ParityCheck, ...]:
    """Run the artefact (``run``) and the eager graph on the check inputs; raise ExportMismatchError past the bound."""
    results = []
    for variant, b in enumerate(batches, start=1):
        inputs = _device_inputs(spec.example(b, variant), device)
        with torch.inference_mode():
            expected = spec.graph(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = run(inputs)
        worst, bound = 0.0, 1.0  # of the output nearest its bound
        for name, e, g in zip(spec.outputs, expected, got, strict=True):
            if tuple(g.shape) != tuple(e.shape):
                raise ExportMismatchError(
                    f"the {what} returns {name} of shape {tuple(g.shape)} at batch {b}; the eager model "
                    f"{tuple(e.shape)}"
                )
            diff = (g.double().cpu() - e.double().cpu()).abs().max().item()
            limit = PARITY_TOLERANCE * max(1.0, e.abs().max().item())
            if not diff <= limit:  # NaN fails too
                raise ExportMismatchError(
                    f"the {what} differs from the eager model at batch {b}: max|Δ| = {diff:.3g} in {name}, over the "
                    f"tolerance {PARITY_TOLERANCE:g} × max(1, max|eager|) = {limit:.3g}; nothing was written"
                )
            if diff / limit >= worst / bound:
                worst, bound = diff, limit
        results.append(ParityCheck(b, worst, bound))
    return tuple(results)


def _onnx_runner(ort: object, path: Path) -> Callable[[Inputs], list[torch.Tensor]]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(inputs: Inputs) -> list[torch.Tensor]:
        feeds = {name: x.cpu().numpy() for name, x in zip(names, inputs, strict=True)}
        return [torch.from_numpy(y) for y in session.run(None, feeds)]

    return run


def _program_runner(path: Path) -> Callable[[Inputs], list[torch.Tensor]]:
    with open(path, "rb") as handle:
        module = torch.export.load(handle).module()

    def run(inputs: Inputs) -> list[torch.Tensor]:
        with torch.inference_mode():
            out = module(*inputs)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    return run


def _target(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected the path of the file to write")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such folder to write {path.name} into")
    return path


def _export(
    model: nn.Module,
    path: str | os.PathLike[str],
    fmt: str,
    batch: int | None,
    check: bool,
) -> ExportResult:
    ort = _import_onnx(check) if fmt == "onnx" else None
    spec = graph_spec(model, batch)
    path = _target(path)
    device = model_device(model)
    start = time.perf_counter()
    example = _device_inputs(spec.example(batch or TRACE_BATCH, 0), device)
    with eval_mode(model), _quiet(), staged_file(path) as tmp:
        if fmt == "onnx":
            program = torch.onnx.export(
                spec.graph,
                example,
                input_names=list(spec.inputs),
                output_names=list(spec.outputs),
                dynamic_shapes=spec.dynamic,
                dynamo=True,
                verbose=False,
            )
            program.save(tmp, external_data=False)
            run = _onnx_runner(ort, tmp) if check else None
        else:
            program = torch.export.export(spec.graph, example, dynamic_shapes=spec.dynamic, strict=False)
            with open(tmp, "wb") as handle:  # a file object: given a path, torch wants it to end in .pt2
                torch.export.save(program, handle)
            run = _program_runner(tmp) if check else None
        what = "ONNX graph in onnxruntime" if fmt == "onnx" else "exported program"
        checks = _check(run, spec, (batch,) if batch else CHECK_BATCHES, device, what) if check else ()
    return ExportResult(
        path=path,
        format=fmt,
        head=type(model).__name__,
        batch=batch,
        inputs=spec.inputs,
        outputs=spec.outputs,
        seconds=time.perf_counter() - start,
        size_bytes=path.stat().st_size,
        checks=checks,
    )


def export_onnx(
    model: nn.Module, path: str | os.PathLike[str], *, batch: int | None = None, check: bool = True
) -> ExportResult:
    """Write ``model`` as an ONNX graph (``torch.onnx.export(dynamo=True)``) to ``path``.

    The batch dimension is dynamic unless ``batch`` fixes it; the graph's inputs and outputs are in the module
    docstring. With ``check``, onnxruntime runs the file against the eager model first (``ExportMismatchError``
    past ``PARITY_TOLERANCE``; nothing written). Needs ``pip install perceiver_io[onnx]``.
    """
    return _export(model, path, "onnx", batch, check)


def export_program(
    model: nn.Module, path: str | os.PathLike[str], *, batch: int | None = None, check: bool = True
) -> ExportResult:
    """Write ``model`` as a ``torch.export`` program (``torch.export.save``, a .pt2 file) to ``path``; load it with
    ``torch.export.load(path).module()``. Batch, inputs, outputs and the check as in ``export_onnx``."""
    return _export(model, path, "pt2", batch, check)
