"""Same weights, same inputs: our heads compute what transformers' Perceiver heads compute."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import SMALL_CONFIGS, assert_close_to_reference, randomize_, small_inputs

import perceiver_io

HEADS = list(SMALL_CONFIGS)


def _logits(out) -> dict[str, torch.Tensor]:
    logits = out.logits
    return logits if isinstance(logits, dict) else {"logits": logits}


@pytest.fixture(scope="module", params=HEADS)
def pair(request, transformers_module, tmp_path_factory):
    """(head name, transformers model, our model loaded from its save_pretrained folder)."""
    head = request.param
    hf_cls = getattr(transformers_module, head)
    torch.manual_seed(0)
    ref = randomize_(hf_cls(transformers_module.PerceiverConfig(**SMALL_CONFIGS[head])), seed=1)
    folder = tmp_path_factory.mktemp(head)
    ref.save_pretrained(folder)
    ours = getattr(perceiver_io, head).from_pretrained(folder)
    return head, ref, ours


@torch.no_grad()
def test_forward_matches_transformers(pair):
    head, ref, ours = pair
    inputs = small_inputs(head)
    expected, got = _logits(ref(**inputs)), _logits(ours(**inputs))
    assert expected.keys() == got.keys()
    for key in expected:
        assert_close_to_reference(got[key], expected[key])


@torch.no_grad()
def test_our_save_loads_in_transformers(pair, transformers_module, tmp_path):
    head, _, ours = pair
    ours = randomize_(copy.deepcopy(ours), seed=7)  # new weights: the check cannot pass by rereading the original
    ours.save_pretrained(tmp_path)
    back = getattr(transformers_module, head).from_pretrained(tmp_path).eval()
    inputs = small_inputs(head, seed=3)
    expected, got = _logits(back(**inputs)), _logits(ours(**inputs))
    for key in expected:
        assert_close_to_reference(got[key], expected[key])


def test_loss_matches_transformers(pair):
    head, ref, ours = pair
    inputs = small_inputs(head)
    if head == "PerceiverForMaskedLM":
        labels = inputs["inputs"].masked_fill(inputs["attention_mask"] == 0, -100)
    elif head in ("PerceiverForOpticalFlow", "PerceiverForMultimodalAutoencoding"):
        pytest.skip("transformers cannot compute a loss for this head")
    else:
        labels = torch.tensor([1, 2])
    with torch.no_grad():
        expected, got = ref(**inputs, labels=labels).loss, ours(**inputs, labels=labels).loss
    assert_close_to_reference(got, expected)
