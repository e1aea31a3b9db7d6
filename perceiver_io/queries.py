"""Decoder queries: what each task asks the latents for.

Every provider maps the preprocessed inputs to a query array (B, Nq, Cq) and exposes ``num_channels`` (Cq). A
provider may honour ``subsampled_points`` (flat indices into its output grid) to decode only part of the output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from perceiver_io.checks import check_dtype, check_rank, check_tensor, values_checkable
from perceiver_io.layers.position import (
    FourierPositionEncoding,
    TrainablePositionEncoding,
    subsampled_positions,
)


def check_points(name: str, points: object, size: int) -> None:
    """``points`` are flat indices into an output grid of ``size`` queries: an int64 (N,) tensor in [0, size)."""
    check_tensor(name, points)
    check_dtype(name, points, (torch.int64,))
    check_rank(name, points, (1,), "flat indices (N,)")
    if values_checkable(points):
        low, high = int(points.min()), int(points.max())
        if low < 0 or high >= size:
            raise ValueError(f"{name} range over [{low}, {high}]; the output grid has indices [0, {size})")


class TrainableQueries(nn.Module):
    """A learned query array (N, C), shared across the batch (classification, MLM, the multimodal label)."""

    def __init__(self, num_queries: int, num_channels: int, init_scale: float = 0.02) -> None:
        super().__init__()
        self.pos = TrainablePositionEncoding(num_queries, num_channels, init_scale)
        self.num_channels = num_channels
        self.num_queries = num_queries

    def forward(self, inputs: torch.Tensor, subsampled_points: torch.Tensor | None = None, **_: object):
        table = self.pos()
        if subsampled_points is not None:
            check_points("subsampled_output_points", subsampled_points, self.num_queries)
            table = table[subsampled_points]
        return table.to(inputs.dtype).expand(inputs.shape[0], -1, -1)


class FourierQueries(nn.Module):
    """Fourier features of output positions on a grid ``index_dims`` (audio samples, video pixels)."""

    def __init__(self, index_dims: Sequence[int], encoding: FourierPositionEncoding) -> None:
        super().__init__()
        self.index_dims = tuple(index_dims)
        self.encoding = encoding
        self.num_channels = encoding.num_channels
        self.num_queries = math.prod(self.index_dims)

    def forward(self, inputs: torch.Tensor, subsampled_points: torch.Tensor | None = None, **_: object):
        if subsampled_points is None:
            feats = self.encoding.grid(self.index_dims, inputs.device, inputs.dtype)
        else:
            check_points("subsampled_output_points", subsampled_points, self.num_queries)
            pos = subsampled_positions(subsampled_points.to(inputs.device), self.index_dims)
            feats = self.encoding.at(pos, inputs.dtype)
        return feats.expand(inputs.shape[0], -1, -1)


class InputQueries(nn.Module):
    """The preprocessed inputs themselves are the queries (optical flow: one query per input pixel)."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.num_channels = num_channels

    def forward(self, inputs: torch.Tensor, subsampled_points: torch.Tensor | None = None, **_: object):
        if subsampled_points is not None:
            raise ValueError("input queries (optical flow) cannot be subsampled")
        return inputs


class ConcatInputQueries(nn.Module):
    """Another provider's queries with the preprocessed inputs before positions in front: (B, Nq, C_in + C_q).

    transformers' ``concat_preprocessed_input``. The width C_in is only known from the data, so the caller states
    the total ``num_channels`` and it is checked on every call.
    """

    def __init__(self, positions: nn.Module, num_channels: int) -> None:
        super().__init__()
        if num_channels <= positions.num_channels:
            raise ValueError(
                f"num_channels={num_channels} leaves no room for the inputs in front of {positions.num_channels} "
                "query channels"
            )
        self.positions = positions
        self.num_channels = num_channels
        self.num_queries = getattr(positions, "num_queries", None)

    def forward(
        self,
        inputs: torch.Tensor,
        subsampled_points: torch.Tensor | None = None,
        inputs_without_pos: torch.Tensor | None = None,
        **_: object,
    ) -> torch.Tensor:
        if inputs_without_pos is None:
            raise ValueError("concat_preprocessed_input needs the preprocessor's inputs without positions")
        if subsampled_points is not None:
            raise ValueError("queries that concatenate the preprocessed inputs cannot be subsampled")
        q = self.positions(inputs)
        if inputs_without_pos.shape[:2] != q.shape[:2] or inputs_without_pos.shape[2] + q.shape[2] != self.num_channels:
            raise ValueError(
                f"inputs without positions {tuple(inputs_without_pos.shape)} and queries {tuple(q.shape)} do not "
                f"concatenate to num_channels={self.num_channels}"
            )
        return torch.cat([inputs_without_pos.to(q.dtype), q], dim=-1)


class NoQueries(nn.Module):
    """No queries at all: for decoders that pool the latents instead of attending to them."""

    num_channels = 0

    def forward(self, inputs: object, **_: object) -> None:
        return None


class MultimodalQueries(nn.Module):
    """Per-modality queries, padded with a learned per-modality vector to a common width and concatenated in
    sorted modality order.

    ``hf_prefixes`` gives, per modality, where transformers nests that modality's query table ("decoder." inside a
    classification or video decoder, "" in a basic decoder; "decoder." when absent), for checkpoint names.
    """

    def __init__(
        self,
        providers: Mapping[str, nn.Module],
        min_padding_size: int = 2,
        hf_prefixes: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.providers = nn.ModuleDict(providers)
        self.hf_prefixes = dict(hf_prefixes or {})
        self.num_channels = max(p.num_channels for p in providers.values()) + min_padding_size
        self.padding = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(1, self.num_channels - p.num_channels) * 0.02) for m, p in providers.items()}
        )

    def check_points(self, subsampled_points: Mapping[str, torch.Tensor | None] | None) -> None:
        """``subsampled_points`` is None, or names every modality whose output is a grid (a dict naming only some
        would decode the others whole: almost surely a slip when decoding in chunks) and no other, each with flat
        indices into that modality's grid."""
        if subsampled_points is None:
            return
        if not isinstance(subsampled_points, Mapping):
            raise TypeError(
                f"subsampled_output_points must be a dict {{modality: indices}}; got {type(subsampled_points).__name__}"
            )
        grids = sorted(m for m, p in self.providers.items() if isinstance(p, FourierQueries))
        unknown = sorted(set(subsampled_points) - set(self.providers))
        missing = [m for m in grids if subsampled_points.get(m) is None]
        if unknown or missing:
            raise ValueError(
                f"subsampled_output_points has keys {sorted(subsampled_points)}; expected indices for each of {grids}"
                + (
                    f" (and optionally {sorted(set(self.providers) - set(grids))})"
                    if set(self.providers) - set(grids)
                    else ""
                )
            )
        for m, points in subsampled_points.items():
            if points is not None:
                check_points(f"subsampled_output_points[{m!r}]", points, self.providers[m].num_queries)

    def output_sizes(self, subsampled_points: Mapping[str, torch.Tensor | None] | None) -> dict[str, int]:
        """Number of queries per modality: the subsampled count, or the provider's full grid."""
        self.check_points(subsampled_points)
        points = subsampled_points or {}
        return {
            m: points[m].shape[0] if points.get(m) is not None else p.num_queries for m, p in self.providers.items()
        }

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        subsampled_points: Mapping[str, torch.Tensor | None] | None = None,
        inputs_without_pos: Mapping[str, torch.Tensor] | None = None,
        **_: object,
    ) -> torch.Tensor:
        self.check_points(subsampled_points)
        subsampled_points = subsampled_points or {}
        inputs_without_pos = inputs_without_pos or {}
        parts = []
        for m in sorted(self.providers):
            q = self.providers[m](
                inputs[m], subsampled_points=subsampled_points.get(m), inputs_without_pos=inputs_without_pos.get(m)
            )
            pad = self.padding[m].to(q.dtype).expand(q.shape[0], q.shape[1], -1)
            parts.append(torch.cat([q, pad], dim=-1))
        return torch.cat(parts, dim=1)
