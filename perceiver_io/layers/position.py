"""Position encodings: trainable tables and Fourier features over an N-d grid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn


def linear_positions(index_dims: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """Grid of positions in [-1, 1] (both ends included) → (prod(index_dims), len(index_dims)), row-major.

    Channel 0 is the first index dimension (rows, for an image), as in DeepMind's ``build_linear_positions``.
    """
    axes = [torch.linspace(-1.0, 1.0, n, dtype=torch.float32, device=device) for n in index_dims]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return grid.reshape(-1, len(index_dims))


def subsampled_positions(points: torch.Tensor, index_dims: Sequence[int]) -> torch.Tensor:
    """Positions of flat indices ``points`` (N,) in a grid of ``index_dims`` → (N, d).

    Uses -1 + 2·i/n, which never reaches +1: DeepMind's decoders (and transformers') do this for subsampled queries,
    unlike the ``linear_positions`` grid of the full input.
    """
    idx = torch.stack(torch.unravel_index(points, tuple(index_dims)), dim=-1)
    dims = torch.tensor(index_dims, device=points.device)
    return -1 + 2 * idx / dims


def fourier_features(
    pos: torch.Tensor, num_bands: int, max_resolution: Sequence[int], concat_pos: bool = True, sine_only: bool = False
) -> torch.Tensor:
    """Fourier features of positions ``pos`` (N, d) → (N, d + 2·d·K) (or d + d·K with ``sine_only``).

    Frequencies are linearly spaced from 1 to the Nyquist frequency res/2 of each dimension. Channel layout:
    [pos_0..pos_{d-1}, sin(dim 0, bands 0..K-1), …, sin(dim d-1, …), cos(same order)].
    """
    freqs = torch.stack(
        [torch.linspace(1.0, res / 2, num_bands, dtype=torch.float32, device=pos.device) for res in max_resolution]
    )  # (d, K)
    n, d = pos.shape
    f = (pos.float()[:, :, None] * freqs[None]).reshape(n, d * num_bands) * math.pi  # (N, d*K); N may be 0
    parts = [torch.sin(f)] if sine_only else [torch.sin(f), torch.cos(f)]
    if concat_pos:
        parts.insert(0, pos.float())
    return torch.cat(parts, dim=-1)


@lru_cache(maxsize=32)
def _cached_grid_features(
    index_dims: tuple[int, ...],
    num_bands: int,
    max_resolution: tuple[int, ...],
    concat_pos: bool,
    sine_only: bool,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    feats = fourier_features(linear_positions(index_dims, device), num_bands, max_resolution, concat_pos, sine_only)
    return feats.to(dtype)


class FourierPositionEncoding(nn.Module):
    """Fixed Fourier features over a grid (no parameters)."""

    def __init__(
        self, num_bands: int, max_resolution: Sequence[int], concat_pos: bool = True, sine_only: bool = False
    ) -> None:
        super().__init__()
        self.num_bands = num_bands
        self.max_resolution = tuple(int(r) for r in max_resolution)
        self.concat_pos = concat_pos
        self.sine_only = sine_only

    @property
    def num_dims(self) -> int:
        return len(self.max_resolution)

    @property
    def num_channels(self) -> int:
        d = self.num_dims
        return (d if self.concat_pos else 0) + d * self.num_bands * (1 if self.sine_only else 2)

    def grid(self, index_dims: Sequence[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Features of the full grid over ``index_dims`` → (prod(index_dims), C); built once per shape/device/dtype."""
        index_dims = tuple(int(n) for n in index_dims)
        if len(index_dims) != self.num_dims:
            raise ValueError(f"grid {index_dims} has {len(index_dims)} dims; this encoding has {self.num_dims}")
        args = (index_dims, self.num_bands, self.max_resolution, self.concat_pos, self.sine_only)
        if torch.compiler.is_compiling():
            # Let the compiler constant-fold it instead of tracing through the cache.
            return fourier_features(linear_positions(index_dims, device), *args[1:]).to(dtype)
        return _cached_grid_features(*args, torch.device(device), dtype)

    def at(self, pos: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Features at explicit positions ``pos`` (N, d) → (N, C)."""
        return fourier_features(pos, self.num_bands, self.max_resolution, self.concat_pos, self.sine_only).to(dtype)


class TrainablePositionEncoding(nn.Module):
    """A learned (N, C) table; optionally resampled bicubically to a new square/rectangular grid."""

    def __init__(self, num_positions: int, num_channels: int, init_scale: float = 0.02) -> None:
        super().__init__()
        self.embeddings = nn.Parameter(torch.randn(num_positions, num_channels) * init_scale)

    @property
    def num_channels(self) -> int:
        return self.embeddings.shape[1]

    def forward(self, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """The table (N, C), or, given ``grid=(h, w)``, the square table resampled to h·w rows."""
        table = self.embeddings
        if grid is None:
            return table
        n, c = table.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"cannot interpolate a position table of {n} rows: it is not a square grid")
        if tuple(grid) == (side, side):
            return table
        img = table.reshape(1, side, side, c).permute(0, 3, 1, 2)
        img = F.interpolate(img, size=tuple(grid), mode="bicubic", align_corners=False)
        return img.permute(0, 2, 3, 1).reshape(-1, c)
