"""Real-size released architectures against transformers, same random weights (slow: minutes, GBs)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close_to_reference

import perceiver_io
from perceiver_io import PerceiverConfig

pytestmark = pytest.mark.slow


@torch.no_grad()
@pytest.mark.parametrize(
    "name, make_inputs",
    [
        ("vision-perceiver-fourier", lambda g: dict(inputs=torch.randn(2, 3, 224, 224, generator=g))),
        (
            "language-perceiver",
            lambda g: dict(
                inputs=torch.randint(6, 262, (2, 2048), generator=g),
                attention_mask=torch.cat([torch.ones(2, 1500), torch.tensor([[1.0], [0.0]]).expand(2, 548)], 1),
            ),
        ),
    ],
)
def test_released_size_matches_transformers(name, make_inputs, transformers_module, tmp_path):
    ours = getattr(perceiver_io, PerceiverConfig.released(name).architectures[0])(PerceiverConfig.released(name))
    ours.eval().save_pretrained(tmp_path)
    ref = getattr(transformers_module, type(ours).__name__).from_pretrained(tmp_path).eval()
    inputs = make_inputs(torch.Generator().manual_seed(0))
    expected, got = ref(**inputs).logits, ours(**inputs).logits
    assert_close_to_reference(got, expected)
