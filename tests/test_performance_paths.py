"""Fast paths compute what the plain paths compute: attention kernels, query blocks, decoder chunks, oneDNN
linears, bf16, torch.compile and activation checkpointing (all on the small configurations; export: test_export.py)."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import SMALL_CONFIGS, assert_close_to_reference, randomize_, small_inputs

import perceiver_io
from perceiver_io.inference import OneDNNLinear, optimize_for_inference
from perceiver_io.layers import onednn
from perceiver_io.layers.attention import (
    attend_key_blocks,
    attention_path,
    plain_attention,
    sdpa_attention,
)
from perceiver_io.layers.layer import MLP
from perceiver_io.layers.position import _cached_grid_features

HEADS = list(SMALL_CONFIGS)
DECODING_HEADS = ["PerceiverForMaskedLM", "PerceiverForOpticalFlow", "PerceiverForMultimodalAutoencoding"]
# bf16 keeps 8 significant bits: on the small random models the logits' relative L2 error is 0.3–1.4 %.
BF16_REL_L2 = 3e-2


def _model(head: str, seed: int = 1, **overrides) -> torch.nn.Module:
    config = perceiver_io.PerceiverConfig.from_dict({**SMALL_CONFIGS[head], **overrides})
    torch.manual_seed(0)
    return randomize_(getattr(perceiver_io, head)(config), seed=seed)


def _logits(out) -> torch.Tensor:
    """All logits of an output as one (B, N) tensor (the multimodal dict flattened in key order)."""
    logits = out.logits
    if isinstance(logits, dict):
        return torch.cat([logits[k].flatten(1) for k in sorted(logits)], dim=1)
    return logits


def _cast(inputs, dtype: torch.dtype):
    if isinstance(inputs, dict):
        return {k: _cast(v, dtype) for k, v in inputs.items()}
    return inputs.to(dtype) if torch.is_tensor(inputs) and inputs.is_floating_point() else inputs


def _qkv(b=2, h=3, t=20, s=33, dqk=8, dv=8, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g, dtype=dtype) for n, d in ((t, dqk), (s, dqk), (s, dv))]


# ---- attention kernels ----


def _onednn(on: bool) -> contextlib.AbstractContextManager:
    """oneDNN wherever it can run (whatever this CPU's measurement says), or nowhere."""
    return onednn.use("on") if on else onednn.disabled()


@pytest.mark.parametrize(
    ("dtype", "shape", "dropout", "onednn_on", "expected"),
    [
        (torch.float32, (512, 512, 128, 128), 0.0, False, "sdpa"),  # vision latents
        (torch.float32, (256, 256, 32, 160), 0.0, False, "plain"),  # language: unequal head widths
        (torch.float32, (512, 512, 64, 64), 0.1, False, "plain"),  # dropout
        (torch.bfloat16, (512, 512, 128, 128), 0.0, False, "plain"),
        (torch.bfloat16, (512, 512, 128, 128), 0.0, True, "plain"),
        (torch.bfloat16, (16, 70_000, 8, 8), 0.0, True, "onednn"),  # a huge key set
        (torch.float32, (512, 512, 128, 128), 0.0, True, "onednn"),
        (torch.float32, (2048, 256, 32, 96), 0.0, True, "onednn"),  # language decoder
        (torch.float32, (256, 256, 32, 160), 0.0, True, "plain"),  # too small per head for oneDNN
        (torch.float32, (16, 70_000, 8, 8), 0.0, True, "sdpa"),  # a huge key set
    ],
)
def test_attention_path_policy(dtype, shape, dropout, onednn_on, expected):
    if expected == "onednn" and not onednn.available():
        pytest.skip("this PyTorch build has no oneDNN linear")
    t, s, dqk, dv = shape
    q, k, v = _qkv(b=1, h=1, t=t, s=s, dqk=dqk, dv=dv, dtype=dtype)
    with _onednn(onednn_on):
        assert attention_path(q, k, v, dropout) == expected


def test_onednn_attention_is_never_taken_while_recording_gradients():
    q, k, v = _qkv(t=512, s=512, dqk=64, dv=64)
    assert attention_path(q.requires_grad_(), k, v) == "sdpa"


def _masks(kind: str | None) -> torch.Tensor | None:
    if kind == "keys":  # (B, 1, S), the second example with every key masked
        mask = torch.ones(2, 1, 33, dtype=torch.bool)
        mask[0, :, 20:] = False
        mask[1] = False
        return mask
    if kind == "queries":  # (B, T, 1): decoder query masking
        return torch.rand(2, 20, 1, generator=torch.Generator().manual_seed(1)) > 0.3
    if kind == "full":  # (B, T, S)
        return torch.rand(2, 20, 33, generator=torch.Generator().manual_seed(2)) > 0.2
    return None


@pytest.mark.parametrize("dv", [8, 12])
@pytest.mark.parametrize("mask_kind", [None, "keys", "queries", "full"])
@pytest.mark.parametrize(
    ("max_scores", "use_onednn"),
    [(1 << 20, False), (2 * 20 * 33, False), (33, False), (1 << 20, True), (33, True)],
    ids=["one block", "pairs of pairs", "rows of 16", "onednn", "onednn rows of 16"],
)
@torch.no_grad()
def test_plain_paths_match_sdpa(dv, mask_kind, max_scores, use_onednn):
    if use_onednn and not onednn.available():
        pytest.skip("this PyTorch build has no oneDNN linear")
    q, k, v = _qkv(dv=dv)
    mask = _masks(mask_kind)
    expected = sdpa_attention(q.double(), k.double(), v.double(), mask)
    assert (sdpa_attention(q, k, v, mask).double() - expected).abs().max() < 1e-5
    got = plain_attention(q, k, v, mask, max_scores=max_scores, use_onednn=use_onednn)
    assert (got.double() - expected).abs().max() < 1e-5


def test_plain_attention_blocks_keep_gradients():
    q, k, v = (t.requires_grad_() for t in _qkv())
    mask = _masks("keys")
    grads = []
    for max_scores in (1 << 20, 33):
        plain_attention(q, k, v, mask, max_scores=max_scores).square().sum().backward()
        grads.append([t.grad.clone() for t in (q, k, v)])
        for t in (q, k, v):
            t.grad = None
    for whole, blocked in zip(*grads, strict=True):
        torch.testing.assert_close(blocked, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("dqk", "dv", "onednn_on"), [(8, 8, False), (8, 12, False), (8, 8, True)], ids=["sdpa", "plain", "onednn"]
)
@torch.no_grad()
def test_key_blocks_match_one_pass(dqk, dv, onednn_on):
    if onednn_on and not onednn.available():
        pytest.skip("this PyTorch build has no oneDNN linear")
    q, k, v = _qkv(t=400, s=700, dqk=dqk, dv=dv)  # 400 × 700 scores per head: oneDNN takes them when on
    blocks = ((k[:, :, i : i + 300], v[:, :, i : i + 300]) for i in range(0, 700, 300))
    expected = sdpa_attention(q.double(), k.double(), v.double())
    with _onednn(onednn_on):
        assert (attend_key_blocks(q, blocks).double() - expected).abs().max() < 1e-5


@torch.no_grad()
def test_bf16_key_blocks_are_as_accurate_as_one_pass():
    q, k, v = _qkv(t=400, s=700, dtype=torch.bfloat16)
    blocks = ((k[:, :, i : i + 300], v[:, :, i : i + 300]) for i in range(0, 700, 300))
    expected = sdpa_attention(q.double(), k.double(), v.double())
    one_pass = (plain_attention(q, k, v).double() - expected).norm()
    assert (attend_key_blocks(q, blocks).double() - expected).norm() < 1.5 * one_pass


KEY_BLOCK_HEADS = [
    "PerceiverForImageClassificationFourier",
    "PerceiverForOpticalFlow",
    "PerceiverForMultimodalAutoencoding",
]


@pytest.mark.parametrize("head", KEY_BLOCK_HEADS)
@pytest.mark.parametrize("onednn_on", [False, True], ids=["torch", "onednn"])
@torch.no_grad()
def test_encoder_key_blocks_match_one_pass(head, onednn_on):
    model = _model(head)
    inputs = small_inputs(head)
    cross_attn = model.perceiver.encoder.cross_attn
    with _onednn(onednn_on):
        whole = _logits(model(**inputs))
        cross_attn.max_key_block = 7
        assert cross_attn._key_block(torch.zeros(2, 8, 32), torch.zeros(2, 100, 4), None) == 7
        torch.testing.assert_close(_logits(model(**inputs)), whole, rtol=1e-5, atol=1e-5)


def test_key_blocks_never_used_for_training_or_masks():
    layer = _model("PerceiverForImageClassificationFourier").perceiver.encoder.cross_attn
    layer.max_key_block = 7
    h, kv = torch.zeros(2, 8, 32), torch.zeros(2, 100, 261)
    assert layer._key_block(h, kv, None) is None  # autograd is recording
    with torch.no_grad():
        assert layer._key_block(h, kv, torch.ones(2, 1, 100, dtype=torch.bool)) is None
        assert layer._key_block(h, kv[:, :7], None) is None  # one block is enough


# ---- decoder chunks and cached position features ----


@pytest.mark.parametrize("head", DECODING_HEADS)
@torch.no_grad()
def test_decoder_chunks_match_whole_decode(head):
    model = _model(head, mask_decoder_queries=True)
    inputs = small_inputs(head)
    decoder = model.perceiver.decoder
    decoder.query_chunk_size = None
    whole = _logits(model(**inputs))
    decoder.query_chunk_size = 7
    torch.testing.assert_close(_logits(model(**inputs)), whole, rtol=1e-5, atol=1e-5)  # GEMM rounding only


@torch.no_grad()
def test_fourier_grid_is_built_once():
    model = _model("PerceiverForImageClassificationFourier")
    inputs = small_inputs("PerceiverForImageClassificationFourier")
    model(**inputs)
    before = _cached_grid_features.cache_info()
    model(**inputs)
    after = _cached_grid_features.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)


# ---- oneDNN linears ----


class _CountOneDNN:
    """Counts calls of ``onednn.linear`` (what every oneDNN path goes through)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = onednn.linear

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(onednn, "linear", counted)


@pytest.mark.skipif(not onednn.available(), reason="this PyTorch build has no oneDNN linear")
@pytest.mark.parametrize("head", HEADS)
def test_inference_runs_on_onednn_and_matches_torch_kernels(head, monkeypatch):
    """The model as loaded, with oneDNN switched on: oneDNN's layers in inference, torch's when
    ``onednn.disabled()``; the results agree at the parity criterion."""
    model = _model(head)
    inputs = small_inputs(head)
    counter = _CountOneDNN(monkeypatch)
    with torch.no_grad():
        with onednn.disabled():
            expected = _logits(model(**inputs))
        assert counter.calls == 0
        with onednn.use("on"):
            got = _logits(model(**inputs))
        assert counter.calls > 0
    assert_close_to_reference(got, expected)


@pytest.mark.skipif(not onednn.available(), reason="this PyTorch build has no oneDNN linear")
@pytest.mark.parametrize("head", HEADS)
def test_training_on_onednn_gives_torch_gradients(head, monkeypatch):
    """A training step with oneDNN switched on (its forward and input-gradient GEMMs inside autograd) gives the loss
    and every parameter's gradient of torch's kernels (``onednn.disabled()``) within float32 rounding; under
    autocast the layers stay torch's."""
    model = _model(head, attention_probs_dropout_prob=0.0).train()
    inputs = small_inputs(head)
    counter = _CountOneDNN(monkeypatch)
    grads, losses = {}, {}
    for mode in ("off", "on"):
        model.zero_grad()
        with onednn.use(mode):
            out = _logits(model(**inputs)).float()
            loss = (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum()  # every logit weighs in
            loss.backward()
        assert (counter.calls > 0) == (mode == "on")
        losses[mode] = loss.detach()
        grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["on"].keys() == grads["off"].keys()
    torch.testing.assert_close(losses["on"], losses["off"], rtol=1e-4, atol=1e-4)
    # Each gradient is compared at its own scale, except gradients that are rounding noise around an exact zero
    # (the keys' bias: softmax ignores a constant shift), which are compared at 1 % of the largest.
    largest = max(grad.abs().max() for grad in grads["off"].values())
    for name, grad in grads["off"].items():
        scale = torch.maximum(grad.abs().max(), 0.01 * largest)
        torch.testing.assert_close(grads["on"][name] / scale, grad / scale, rtol=1e-4, atol=1e-4, msg=name)
    counter.calls = 0
    with onednn.use("on"), torch.autocast("cpu", dtype=torch.bfloat16):
        model(**inputs)
    assert counter.calls == 0


@pytest.mark.skipif(not onednn.available(), reason="this PyTorch build has no oneDNN linear")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
@pytest.mark.parametrize("needs", ["all", "input only", "weight only"])
def test_onednn_linear_function_gradients(bias, needs):
    """OneDNNLinearFunction against F.linear's autograd on a 3-D input: the output and the requested gradients
    equal within float32 rounding."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, 24, requires_grad=needs != "weight only")
    weight = torch.randn(40, 24, requires_grad=needs != "input only")
    b = torch.randn(40, requires_grad=needs != "input only") if bias else None
    grad = torch.randn(3, 5, 40).transpose(0, 1).contiguous().transpose(0, 1)  # a strided output gradient
    leaves = [t for t in (x, weight, b) if t is not None and t.requires_grad]
    got = onednn.OneDNNLinearFunction.apply(x, weight, b)
    got_grads = torch.autograd.grad(got, leaves, grad)
    expected = F.linear(x, weight, b)
    expected_grads = torch.autograd.grad(expected, leaves, grad)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for g, e in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not onednn.available(), reason="this PyTorch build has no oneDNN linear")
@pytest.mark.parametrize(("slowed", "expected"), [("_torch_linear", True), ("linear", False)], ids=["wins", "loses"])
def test_onednn_linears_only_where_measured_faster(slowed, expected, monkeypatch):
    """``use("auto")`` (the default) times oneDNN's layer against torch's on the first call of each shape and keeps
    the faster for later calls of that shape; another shape is measured anew; ``use("on" | "off")`` overrides."""
    import time

    calls = []
    real = {name: getattr(onednn, name) for name in ("linear", "_torch_linear")}

    def patched(name):
        def run(*args):
            calls.append(name)
            time.sleep(0.02 if name == slowed else 0.0)
            return real[name](*args)

        return run

    for name in real:
        monkeypatch.setattr(onednn, name, patched(name))
    monkeypatch.setattr(onednn, "_measured", {})
    layer = onednn.OneDNNLinear(8, 6)
    x = torch.randn(4, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
        assert onednn.fast(x, layer.weight, layer.bias) is expected
        measured = len(calls)
        assert calls.count("linear") >= 2 and calls.count("_torch_linear") >= 2  # a warm-up and a timed call each
        layer(x)
        assert calls[measured:] == ["linear" if expected else "_torch_linear"]  # the choice is kept: no more timing
        layer(torch.randn(5, 8))
        assert len(calls) > measured + 3  # a new shape is measured
        with onednn.use("on"):
            assert onednn.fast(x, layer.weight)
        with onednn.use("off"):
            assert not onednn.fast(x, layer.weight)
    assert not onednn.fast(x.to(torch.float64).requires_grad_(), layer.weight.double())  # float32 only


def test_measured_attention_path_keeps_the_fastest_kernel():
    """In CPU inference ``attention_path`` times each candidate once per shape on the caller's own attention and
    keeps the fastest; with autograd recording it falls back to the rule without running anything."""
    import time

    from perceiver_io.layers import attention

    delays = {"plain": 0.03, "sdpa": 0.0, "onednn": 0.03}
    calls = []

    def run(path):
        calls.append(path)
        time.sleep(delays[path])

    q, k, v = _qkv(t=16, s=24, dqk=8, dv=8)
    caller = ("test", object())  # a key no other test shares
    with torch.no_grad():
        assert attention.attention_path(q, k, v, run=run, caller=caller) == "sdpa"
        assert set(calls) >= {"plain", "sdpa"}
        calls.clear()
        assert attention.attention_path(q, k, v, run=run, caller=caller) == "sdpa"
        assert calls == []  # kept, not measured again
    assert attention.attention_path(q.requires_grad_(), k, v, run=run, caller=caller) == attention.rule_path(q, k, v)
    assert calls == []


def test_mlp_fuses_gelu_into_onednn_linear():
    mlp = MLP(24, 2, gelu_approximate="tanh")
    x = torch.randn(3, 5, 24)
    with torch.no_grad():
        with onednn.disabled():
            expected = mlp(x)
        torch.testing.assert_close(mlp(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not onednn.available(), reason="this PyTorch build has no oneDNN linear")
@pytest.mark.parametrize("head", HEADS)
@torch.no_grad()
def test_optimize_for_inference_matches_default(head):
    model = _model(head)
    fast = optimize_for_inference(copy.deepcopy(model))
    assert any(isinstance(m, OneDNNLinear) for m in fast.modules())
    assert not any(type(m) is torch.nn.Linear for m in fast.modules())
    assert fast.state_dict().keys() == model.state_dict().keys()
    assert optimize_for_inference(fast) is fast  # idempotent: nothing left to swap
    inputs = small_inputs(head)
    assert_close_to_reference(_logits(fast(**inputs)), _logits(model(**inputs)))


@pytest.mark.skipif(not onednn.available(), reason="this PyTorch build has no oneDNN linear")
@pytest.mark.parametrize("head", HEADS)
@torch.no_grad()
def test_prepacked_weights_compute_the_default_and_follow_weight_changes(head):
    """prepack=True multiplies by oneDNN's blocked copies of the weights: same logits as the default model; after
    the weights change in place (load_state_dict copies into them) the copies are made anew, so the logits follow
    the new weights; a deep copy (which cannot copy oneDNN's opaque tensors) packs its own."""
    model, inputs = _model(head), small_inputs(head)
    packed = optimize_for_inference(copy.deepcopy(model), prepack=True)
    with onednn.use("on"):
        assert_close_to_reference(_logits(packed(**inputs)), _logits(model(**inputs)))
        assert any(m._packed is not None for m in packed.modules() if isinstance(m, OneDNNLinear))
        randomize_(model, seed=1)
        packed.load_state_dict(model.state_dict())
        assert_close_to_reference(_logits(packed(**inputs)), _logits(model(**inputs)))
        assert_close_to_reference(_logits(copy.deepcopy(packed)(**inputs)), _logits(model(**inputs)))
    optimize_for_inference(packed)  # prepack=False drops the copies
    assert all(m._packed is None and not m.pack_weight for m in packed.modules() if isinstance(m, OneDNNLinear))


def test_prepack_refuses_int8_and_non_bools():
    with pytest.raises(ValueError, match="prepack=True applies to precision 'fp32' or 'bf16'"):
        optimize_for_inference(torch.nn.Linear(2, 2), precision="int8", prepack=True)
    with pytest.raises(TypeError, match="prepack must be True or False, got 'yes'"):
        optimize_for_inference(torch.nn.Linear(2, 2), prepack="yes")


def test_optimized_model_still_trains():
    """The swapped layers train like the originals: on the same kernels (torch's), bit-identical gradients."""
    head = "PerceiverForImageClassificationFourier"
    model = _model(head, attention_probs_dropout_prob=0.0)
    fast = optimize_for_inference(copy.deepcopy(model)).train()
    inputs, labels = small_inputs(head), torch.tensor([1, 2])
    with onednn.disabled():
        model.train()(**inputs, labels=labels).loss.backward()
        fast(**inputs, labels=labels).loss.backward()
    grads = dict(fast.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, rtol=0, atol=0)


def test_onednn_linear_fused_gelu():
    linear = torch.nn.Linear(24, 40)
    x = torch.randn(3, 5, 24)
    fused = OneDNNLinear.wrap(linear)
    assert fused.weight is linear.weight
    with torch.no_grad():
        torch.testing.assert_close(fused(x, gelu="tanh"), F.gelu(linear(x), approximate="tanh"), rtol=1e-5, atol=1e-5)


# ---- bf16 ----


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("mode", ["autocast", "bf16 weights"])
@torch.no_grad()
def test_bf16_inference_within_tolerance(head, mode):
    model = _model(head)
    inputs = small_inputs(head)
    expected = _logits(model(**inputs)).double()
    if mode == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = _logits(model(**inputs))
    else:
        got = _logits(model.to(torch.bfloat16)(**_cast(inputs, torch.bfloat16)))
    assert got.dtype == torch.bfloat16 or mode == "autocast"
    rel = ((got.double() - expected).norm() / expected.norm()).item()
    assert rel < BF16_REL_L2


@pytest.mark.parametrize("head", HEADS)
@torch.no_grad()
def test_optimize_for_inference_bf16_within_tolerance(head):
    model = _model(head)
    inputs = small_inputs(head)
    expected = _logits(model(**inputs)).double()
    got = _logits(optimize_for_inference(model, precision="bf16")(**_cast(inputs, torch.bfloat16)))
    assert got.dtype == torch.bfloat16
    rel = ((got.double() - expected).norm() / expected.norm()).item()
    assert rel < BF16_REL_L2


@pytest.mark.parametrize("bad", ["fp16", "BF16", "", None])
def test_optimize_for_inference_refuses_unknown_precision(bad):
    with pytest.raises(ValueError, match="fp32, bf16"):
        optimize_for_inference(torch.nn.Linear(2, 2), precision=bad)


# ---- torch.compile, activation checkpointing ----


def _assert_compiled_matches_eager(head: str, backend: str) -> None:
    model = _model(head)
    inputs = small_inputs(head)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend)
    with torch.no_grad():
        torch.testing.assert_close(_logits(compiled(**inputs)), _logits(model(**inputs)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_compile_traces_every_head(head):
    """Dynamo + AOTAutograd capture the whole head (the fast check; inductor's C++ build is in the slow one)."""
    _assert_compiled_matches_eager(head, "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("head", HEADS)
def test_compile_inductor_every_head(head):
    _assert_compiled_matches_eager(head, "inductor")


@pytest.mark.parametrize("head", ["PerceiverForMaskedLM", "PerceiverForImageClassificationFourier"])
def test_gradient_checkpointing_gives_same_gradients(head):
    model = _model(head, attention_probs_dropout_prob=0.0).train()
    inputs = small_inputs(head)
    labels = inputs["inputs"] if head == "PerceiverForMaskedLM" else torch.tensor([1, 2])
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        model.set_gradient_checkpointing(enabled)
        model(**inputs, labels=labels).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=name)
