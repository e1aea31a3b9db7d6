"""Each DeepMind-numerics switch against a closed form or an independent reference implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SMALL_CONFIGS, assert_close_to_reference, randomize_, small_inputs

import perceiver_io
from perceiver_io import PerceiverConfig
from perceiver_io.adapters.image import ConvStem, patches_for_flow, space_to_depth
from perceiver_io.layers.attention import Attention
from perceiver_io.layers.layer import MLP
from perceiver_io.layers.position import fourier_features, linear_positions, subsampled_positions


def test_tanh_gelu_closed_form():
    mlp = MLP(4, 1, gelu_approximate="tanh")
    torch.nn.init.eye_(mlp.fc1.weight), torch.nn.init.zeros_(mlp.fc1.bias)
    torch.nn.init.eye_(mlp.fc2.weight), torch.nn.init.zeros_(mlp.fc2.bias)
    x = torch.linspace(-4, 4, 64).reshape(16, 4)
    expected = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))  # jax.nn.gelu default
    torch.testing.assert_close(mlp(x), expected, atol=1e-6, rtol=0)


def test_tanh_gelu_matches_transformers_gelu_pytorch_tanh(transformers_module, tmp_path):
    head = "PerceiverForSequenceClassification"
    cfg = dict(SMALL_CONFIGS[head], hidden_act="gelu_pytorch_tanh")
    ref = randomize_(transformers_module.PerceiverForSequenceClassification(transformers_module.PerceiverConfig(**cfg)))
    ref.save_pretrained(tmp_path)
    ours = perceiver_io.PerceiverForSequenceClassification.from_pretrained(tmp_path)
    assert ours.config.gelu_approximate == "tanh"
    inputs = small_inputs(head)
    with torch.no_grad():
        assert_close_to_reference(ours(**inputs).logits, ref(**inputs).logits)


def _same_reference(x: np.ndarray, w: np.ndarray, stride: int, pool: bool) -> np.ndarray:
    """TensorFlow "SAME" conv (or max-pool when pool=True) by definition, with loops: out[i] reads
    x[i·s + k − pad_before] for pad_before = total // 2, total = max((ceil(n/s) − 1)·s + k − n, 0)."""
    k = w.shape[-1]
    c_out = 1 if pool else w.shape[0]
    n_h, n_w = x.shape[-2:]
    o_h, o_w = math.ceil(n_h / stride), math.ceil(n_w / stride)
    pt = max((o_h - 1) * stride + k - n_h, 0) // 2
    pl = max((o_w - 1) * stride + k - n_w, 0) // 2
    out = np.full((x.shape[0] if pool else c_out, o_h, o_w), -np.inf if pool else 0.0)
    for i in range(o_h):
        for j in range(o_w):
            for a in range(k):
                for b in range(k):
                    y, z = i * stride + a - pt, j * stride + b - pl
                    if 0 <= y < n_h and 0 <= z < n_w:
                        if pool:
                            out[:, i, j] = np.maximum(out[:, i, j], x[:, y, z])
                        else:
                            out[:, i, j] += (w[:, :, a, b] * x[None, :, y, z]).sum(1)
    return out


@pytest.mark.parametrize("size", [(13, 11), (16, 17)])
def test_tf_same_stem_matches_definition(size):
    torch.manual_seed(0)
    stem = ConvStem(2, 3, padding="tf_same").eval()
    stem.batchnorm.running_mean.uniform_(-0.1, 0.1), stem.batchnorm.running_var.uniform_(0.5, 1.5)
    stem.batchnorm.weight.data.uniform_(0.5, 1.5), stem.batchnorm.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(1, 2, *size)
    conv = _same_reference(x[0].double().numpy(), stem.conv.weight.double().detach().numpy(), 2, pool=False)
    bn = stem.batchnorm
    act = np.maximum(
        (conv - bn.running_mean.double().numpy()[:, None, None])
        / np.sqrt(bn.running_var.double().numpy()[:, None, None] + bn.eps)
        * bn.weight.double().detach().numpy()[:, None, None]
        + bn.bias.double().detach().numpy()[:, None, None],
        0,
    )
    expected = _same_reference(act, np.zeros((1, 1, 3, 3)), 2, pool=True)
    with torch.no_grad():
        got = stem(x)[0].double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_stem_grid_sizes():
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        assert ConvStem(3, 4, padding="tf_same")(x).shape[-2:] == (56, 56)  # DeepMind
        assert ConvStem(3, 4, padding="transformers")(x).shape[-2:] == (55, 55)  # transformers' port


def test_wipe_fully_masked_rows():
    torch.manual_seed(0)
    attn = Attention(8, 6, 8, 8, 5, num_heads=2, wipe_fully_masked_rows=True)
    q, kv = torch.randn(2, 3, 8), torch.randn(2, 4, 6)
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[0, 1] = False  # query 1 of example 0 may attend to nothing
    mask[1, 2, :2] = False  # partially masked row: ordinary masked attention
    out = attn(q, kv, mask)
    torch.testing.assert_close(out[0, 1], attn.o.bias)  # zeroed before the output projection
    plain = Attention(8, 6, 8, 8, 5, num_heads=2)
    plain.load_state_dict(attn.state_dict())
    torch.testing.assert_close(out[1, 2], plain(q[1:, 2:], kv[1:, 2:], None)[0, 0])
    torch.testing.assert_close(out[0, 0], plain(q[:1, :1], kv[:1], None)[0, 0])


def test_deepmind_mlm_masks_padded_decoder_queries():
    cfg = PerceiverConfig.from_dict(SMALL_CONFIGS["PerceiverForMaskedLM"]).with_deepmind_numerics()
    model = randomize_(perceiver_io.PerceiverForMaskedLM(cfg))
    inputs = small_inputs("PerceiverForMaskedLM")
    with torch.no_grad():
        logits = model(**inputs).logits
    # Wiped queries see no latent: every padded position of example 1 gets the same logits, the real ones don't.
    padded = logits[1, 15:]
    torch.testing.assert_close(padded, padded[:1].expand_as(padded))
    assert (logits[1, :15] - logits[1, :1]).abs().amax() > 1e-3


def test_position_grids():
    # Encoder inputs: linspace(-1, 1) includes both ends; subsampled decoder queries use -1 + 2i/N (never +1).
    torch.testing.assert_close(linear_positions([3])[:, 0], torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(subsampled_positions(torch.arange(4), [4])[:, 0], torch.tensor([-1.0, -0.5, 0.0, 0.5]))
    grid = linear_positions([2, 3])
    assert grid[1].tolist() == [-1.0, 0.0]  # row-major, channel 0 = rows


def test_fourier_features_closed_form():
    pos = torch.tensor([[0.5, -0.25]])
    feats = fourier_features(pos, num_bands=3, max_resolution=(8, 4))
    f0, f1 = torch.linspace(1, 4, 3), torch.linspace(1, 2, 3)
    f = torch.cat([0.5 * f0, -0.25 * f1]) * math.pi
    expected = torch.cat([pos[0], torch.sin(f), torch.cos(f)])
    torch.testing.assert_close(feats[0], expected)
    assert feats.shape[1] == 2 + 2 * 2 * 3
    # No points (a modality with no subsampled outputs) gives no rows, not an error.
    assert fourier_features(pos[:0], num_bands=3, max_resolution=(8, 4)).shape == (0, 14)


def test_space_to_depth_and_flow_patches_layout():
    x = torch.arange(2 * 3 * 4 * 4.0).reshape(1, 2, 3, 4, 4)  # (B, T, C, H, W)
    d = space_to_depth(x, temporal_block=2, spatial_block=2)
    # depth order (t, dy, dx, c): element [0, 0, 0, 0, :] lists frame 0's 2×2 block channel-last, then frame 1's.
    expected = [x[0, t, c, dy, dx].item() for t in range(2) for dy in range(2) for dx in range(2) for c in range(3)]
    assert d[0, 0, 0, 0].tolist() == expected
    frames = torch.randn(1, 2, 3, 5, 6)
    p = patches_for_flow(frames)
    padded = torch.nn.functional.pad(frames, (1, 1, 1, 1))
    # TF extract_patches order (dy, dx, c) around pixel (2, 3) of frame 1.
    ref = [padded[0, 1, c, 2 + dy, 3 + dx].item() for dy in range(3) for dx in range(3) for c in range(3)]
    torch.testing.assert_close(p[0, 1, :, 2, 3], torch.tensor(ref))
