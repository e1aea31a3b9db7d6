"""Several modalities at once: each padded to a common width and concatenated in sorted name order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from perceiver_io.adapters.arguments import check_postprocessor_call, check_preprocessor_call
from perceiver_io.checks import check_floating, check_tensor, parameter_dtype


class MultimodalPreprocessor(nn.Module):
    """Dict of per-modality inputs → (B, sum M_m, C) with C = max C_m + ``min_padding_size``.

    Each modality's padding channels hold a learned vector (a modality embedding). A modality listed in
    ``mask_probs`` has each token replaced, with that probability, by a learned mask token; with probability 1.0
    (the label of the video autoencoder) this is deterministic and is how classification-by-masking works.
    ``input_shapes`` ({modality: shape without the batch axis}) fixes the shapes a model was built for; a modality
    not in it takes whatever its preprocessor takes.
    """

    def __init__(
        self,
        modalities: Mapping[str, nn.Module],
        mask_probs: Mapping[str, float] | None = None,
        min_padding_size: int = 2,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        self.modalities = nn.ModuleDict(modalities)
        self.input_shapes = {m: tuple(shape) for m, shape in (input_shapes or {}).items()}
        self.mask_probs = dict(mask_probs or {})
        self.num_channels = max(p.num_channels for p in modalities.values()) + min_padding_size
        self.padding = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(1, self.num_channels - p.num_channels) * 0.02) for m, p in modalities.items()}
        )
        self.mask = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(1, self.num_channels) * 0.02) for m in self.mask_probs}
        )

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        pos: torch.Tensor | None = None,
        network_input_is_1d: bool = True,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, dict[str, int], dict[str, torch.Tensor]]:
        """transformers' preprocessor call → (B, sum M_m, C), {modality: M_m}, {modality: inputs without positions}."""
        check_preprocessor_call(type(self).__name__, pos, network_input_is_1d, interpolate_pos_encoding)
        if not isinstance(inputs, Mapping) or set(inputs) != set(self.modalities):
            got = sorted(inputs) if isinstance(inputs, Mapping) else type(inputs).__name__
            raise ValueError(f"multimodal inputs must be a dict with keys {sorted(self.modalities)}; got {got}")
        like = parameter_dtype(self)
        for m in sorted(inputs):
            x, name = inputs[m], f"{m} inputs"
            check_tensor(name, x)
            expected = self.input_shapes.get(m)
            if expected is not None and tuple(x.shape[1:]) != expected:
                raise ValueError(
                    f"{name}: shape {tuple(x.shape)}; this model takes (batch, {', '.join(map(str, expected))})"
                )
            if x.dim() == 0:
                raise ValueError(f"{name}: a scalar; expected a batch (batch, ...)")
            check_floating(name, x, like)
        batch_sizes = {m: x.shape[0] for m, x in inputs.items()}
        first_batch = next(iter(batch_sizes.values()))
        if any(b != first_batch for b in batch_sizes.values()):  # not a set: a traced batch size is unhashable
            raise ValueError(f"modalities have different batch sizes: {batch_sizes}")
        features, without_pos = {}, {}
        for m in sorted(self.modalities):
            features[m], _, without_pos[m] = self.modalities[m](inputs[m])
        sizes = {m: x.shape[1] for m, x in features.items()}
        # Written in place into one (B, M, C) array: padding each modality and then concatenating would hold up to
        # three copies of the video's inputs at once.
        first = features[min(features)]
        out = first.new_empty(first.shape[0], sum(sizes.values()), self.num_channels)
        start = 0
        for m, x in features.items():
            b, n, c = x.shape
            rows = slice(start, start + n)
            out[:, rows, :c] = x
            out[:, rows, c:] = self.padding[m].to(x.dtype)
            p = self.mask_probs.get(m, 0.0)
            if p > 0:
                drop = torch.ones(b, n, 1, device=x.device) if p >= 1 else torch.rand(b, n, 1, device=x.device) < p
                out[:, rows] = torch.where(drop.bool(), self.mask[m].to(x.dtype).expand(b, n, -1), out[:, rows])
            start += n
        return out, sizes, without_pos


class MultimodalPostprocessor(nn.Module):
    """Decoder output (B, sum N_m, C) → dict of per-modality outputs, split in sorted order by ``modality_sizes``.

    With ``input_is_dict`` the decoder output is already a dict {modality: (B, N_m, C)} and is not split.
    """

    def __init__(self, modalities: Mapping[str, nn.Module], input_is_dict: bool = False) -> None:
        super().__init__()
        self.modalities = nn.ModuleDict(modalities)
        self.input_is_dict = input_is_dict

    def forward(
        self,
        x: torch.Tensor | Mapping[str, torch.Tensor],
        pos: torch.Tensor | None = None,
        modality_sizes: Mapping[str, int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """transformers' postprocessor call; ``pos`` must be None, ``modality_sizes`` is required for a tensor."""
        check_postprocessor_call(type(self).__name__, pos, modality_sizes, splits=True)
        if self.input_is_dict:
            if not isinstance(x, Mapping) or set(x) != set(self.modalities):
                got = sorted(x) if isinstance(x, Mapping) else type(x).__name__
                raise ValueError(f"input_is_dict=True expects a dict with keys {sorted(self.modalities)}; got {got}")
            return {m: self.modalities[m](x[m]) for m in sorted(x)}
        if modality_sizes is None:
            raise ValueError("the multimodal postprocessor needs modality_sizes to split its input")
        out, start = {}, 0
        for m in sorted(modality_sizes):
            out[m] = self.modalities[m](x[:, start : start + modality_sizes[m]])
            start += modality_sizes[m]
        return out
