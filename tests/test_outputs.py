"""Outputs as transformers returns them: output classes, attention maps, hidden states, tuples and config defaults,
each compared with transformers' Perceiver on the same weights."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from conftest import SMALL_CONFIGS, assert_close_to_reference, randomize_, small_inputs

import perceiver_io
from perceiver_io.layers import attention
from perceiver_io.layers.attention import attend, weighted_attention
from perceiver_io.outputs import PerceiverMaskedLMOutput, PerceiverModelOutput

HEADS = list(SMALL_CONFIGS)
MAPS = ("hidden_states", "attentions", "cross_attentions")
# transformers computes no loss for these heads (it raises NotImplementedError on labels).
NO_LOSS_HEADS = ("PerceiverForOpticalFlow", "PerceiverForMultimodalAutoencoding")


@pytest.fixture(scope="module", params=HEADS)
def pair(request, transformers_module, tmp_path_factory):
    """(head name, transformers model, our model loaded from its save_pretrained folder)."""
    head = request.param
    torch.manual_seed(0)
    config = transformers_module.PerceiverConfig(**SMALL_CONFIGS[head])
    ref = randomize_(getattr(transformers_module, head)(config), seed=1)
    folder = tmp_path_factory.mktemp(head)
    ref.save_pretrained(folder)
    return head, ref, getattr(perceiver_io, head).from_pretrained(folder)


def _labels(head: str, inputs: dict) -> torch.Tensor:
    if head == "PerceiverForMaskedLM":
        return inputs["inputs"].masked_fill(inputs["attention_mask"] == 0, -100)
    return torch.tensor([1, 2])


def _assert_same(got, expected, where: str = "output") -> None:
    """Equal structure (tuples, dicts, None), tensors within the parity criterion."""
    if torch.is_tensor(expected):
        assert torch.is_tensor(got), f"{where}: {type(got).__name__} where transformers has a tensor"
        assert_close_to_reference(got, expected)
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for key in expected:
            _assert_same(got[key], expected[key], f"{where}[{key!r}]")
    else:
        assert isinstance(expected, tuple), type(expected)
        assert type(got) is tuple, f"{where}: {type(got).__name__} where transformers has a tuple"
        assert len(got) == len(expected), f"{where}: {len(got)} elements, transformers {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            _assert_same(g, e, f"{where}[{i}]")


@torch.no_grad()
def test_maps_and_hidden_states_match_transformers(pair):
    head, ref, ours = pair
    inputs = small_inputs(head)
    expected = ref(**inputs, output_attentions=True, output_hidden_states=True)
    got = ours(**inputs, output_attentions=True, output_hidden_states=True)
    assert type(got).__name__ == type(expected).__name__
    assert list(got.keys()) == list(expected.keys()) == ["logits", *MAPS]
    config = ours.config
    assert len(got.attentions) == config.num_blocks * config.num_self_attends_per_block
    assert len(got.hidden_states) == config.num_blocks * (config.num_self_attends_per_block + 1)
    assert len(got.cross_attentions) == 2  # the encoder's, then the decoder's
    for key in ("logits", *MAPS):
        _assert_same(got[key], expected[key], key)


@pytest.mark.parametrize("with_labels", [False, True], ids=["no-labels", "labels"])
@pytest.mark.parametrize("extras", [False, True], ids=["plain", "maps"])
@torch.no_grad()
def test_tuple_output_matches_transformers(pair, with_labels, extras):
    head, ref, ours = pair
    if with_labels and head in NO_LOSS_HEADS:
        pytest.skip("transformers cannot compute a loss for this head")
    inputs = small_inputs(head)
    if with_labels:
        inputs["labels"] = _labels(head, inputs)
    kwargs = dict(return_dict=False, output_attentions=extras, output_hidden_states=extras)
    _assert_same(ours(**inputs, **kwargs), ref(**inputs, **kwargs))


# Heads whose PerceiverModel logits are transformers' too. Not flow: transformers' flow decoder reshapes to the fixed
# train_size and rescales, ours leaves that to the head so that frames of any size work (the heads' outputs agree).
SAME_MODEL_LOGITS = (
    "PerceiverForMaskedLM",
    "PerceiverForMultimodalAutoencoding",
    "PerceiverForSequenceClassification",
    "PerceiverForImageClassificationLearned",
    "PerceiverForImageClassificationFourier",
    "PerceiverForImageClassificationConvProcessing",
)


@torch.no_grad()
def test_base_model_tuple_matches_transformers(pair):
    """PerceiverModel itself: (logits, last_hidden_state, hidden_states, attentions, (encoder map,), decoder map)."""
    head, ref, ours = pair
    inputs = small_inputs(head)
    kwargs = dict(return_dict=False, output_attentions=True, output_hidden_states=True)
    got, expected = ours.perceiver(**inputs, **kwargs), ref.perceiver(**inputs, **kwargs)
    first = 0 if head in SAME_MODEL_LOGITS else 1
    _assert_same(got[first:], expected[first:])
    out = ours.perceiver(**inputs, output_attentions=True)
    assert isinstance(out, PerceiverModelOutput)
    assert list(out.keys()) == ["logits", "last_hidden_state", "attentions", "cross_attentions"]


@pytest.mark.parametrize("name", ["sequence_classification", "optical_flow"])
@torch.no_grad()
def test_composed_model_tuple_matches_transformers(name, tmp_path):
    """A PerceiverModel composed of transformers-named decoders squeezes / rescales its logits as transformers'
    does: its whole tuple matches, logits included."""
    from test_components import COMPOSITIONS, loaded_pair

    compose, head, overrides = COMPOSITIONS[name]
    ref, mine = loaded_pair(compose, {**SMALL_CONFIGS[head], **overrides}, tmp_path)
    inputs = small_inputs(head)
    kwargs = dict(return_dict=False, output_attentions=True, output_hidden_states=True)
    _assert_same(mine(**inputs, **kwargs), ref(**inputs, **kwargs))


@torch.no_grad()
def test_config_defaults_apply_and_arguments_override_them(pair):
    head, ref, ours = pair
    ours = copy.deepcopy(ours)  # the module-scoped model keeps its config
    inputs = small_inputs(head)
    ours.config.output_attentions = True
    ours.config.output_hidden_states = True
    expected = ref(**inputs, output_attentions=True, output_hidden_states=True)
    for key in MAPS:
        _assert_same(ours(**inputs)[key], expected[key], key)
    assert list(ours(**inputs, output_attentions=False, output_hidden_states=False).keys()) == ["logits"]
    ours.config.return_dict = False
    _assert_same(ours(**inputs), ref(**inputs, output_attentions=True, output_hidden_states=True, return_dict=False))
    assert list(ours(**inputs, return_dict=True).keys()) == ["logits", *MAPS]


def test_non_boolean_option_raises(pair):
    head, _, ours = pair
    with pytest.raises(TypeError, match=r"output_attentions must be True, False or None.*'yes'"):
        ours(**small_inputs(head), output_attentions="yes")


@pytest.mark.parametrize("head", ["PerceiverForMaskedLM", "PerceiverForOpticalFlow"])
@torch.no_grad()
def test_chunked_decoder_returns_the_whole_map(head, transformers_module, tmp_path):
    config = transformers_module.PerceiverConfig(**SMALL_CONFIGS[head])
    ref = randomize_(getattr(transformers_module, head)(config), seed=1)
    ref.save_pretrained(tmp_path)
    ours = getattr(perceiver_io, head).from_pretrained(tmp_path)
    ours.perceiver.decoder.query_chunk_size = 7  # 24 (MLM) and 96 (flow) queries: several chunks, a ragged last one
    inputs = small_inputs(head)
    expected = ref(**inputs, output_attentions=True).cross_attentions
    _assert_same(ours(**inputs, output_attentions=True).cross_attentions, expected)


@torch.no_grad()
def test_maps_bypass_key_blocks(transformers_module, tmp_path):
    """The key-block path sees a block of keys at a time: a call that asks for maps takes the full path."""
    head = "PerceiverForImageClassificationFourier"
    ref = randomize_(getattr(transformers_module, head)(transformers_module.PerceiverConfig(**SMALL_CONFIGS[head])))
    ref.save_pretrained(tmp_path)
    ours = getattr(perceiver_io, head).from_pretrained(tmp_path)
    ours.perceiver.encoder.cross_attn.max_key_block = 7  # 120 inputs: key blocks whenever allowed
    inputs = small_inputs(head)
    expected = ref(**inputs, output_attentions=True)
    got = ours(**inputs, output_attentions=True)
    _assert_same(got.cross_attentions, expected.cross_attentions)
    _assert_same(got.logits, expected.logits)


@torch.no_grad()
def test_default_calls_never_materialise_maps(monkeypatch):
    """Without output_attentions every head stays on the fast kernels (the weights path is never entered)."""

    def refuse(*args, **kwargs):
        raise AssertionError("weighted_attention called without output_attentions")

    monkeypatch.setattr(attention, "weighted_attention", refuse)
    for head in HEADS:
        config = perceiver_io.PerceiverConfig.from_dict(SMALL_CONFIGS[head])
        out = getattr(perceiver_io, head)(config).eval()(**small_inputs(head))
        assert list(out.keys()) == ["logits"]


@pytest.mark.parametrize("wipe", [False, True])
def test_returned_weights_are_what_multiplied_the_values(wipe):
    """Under dropout and masks, output = probabilities @ values, rows of the probabilities sum to 1 before dropout
    (0 for a wiped, fully masked query), and the output equals the fast path's where dropout is off."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, d, generator=g) for n, d in ((5, 8), (7, 8), (7, 4)))
    mask = torch.rand(2, 5, 7, generator=g) > 0.3
    mask[0, 1] = False  # fully masked query
    out, probs = attend(q, k, v, mask, wipe_fully_masked_rows=wipe, need_weights=True)
    torch.testing.assert_close(out, probs @ v)
    fast, none = attend(q, k, v, mask, wipe_fully_masked_rows=wipe)
    assert none is None
    torch.testing.assert_close(out, fast)
    sums = torch.ones(2, 3, 5)
    if wipe:
        sums[0, :, 1] = 0
    torch.testing.assert_close(probs.sum(-1), sums)
    assert (probs[1].masked_select(~mask[1, None].expand(3, -1, -1)) == 0).all()
    _, undropped = weighted_attention(q, k, v, mask)
    torch.manual_seed(1)
    dropped_out, dropped = weighted_attention(q, k, v, mask, dropout_p=0.5)
    torch.testing.assert_close(dropped_out, dropped @ v)
    kept = dropped != 0
    assert 0 < kept.float().mean() < 1
    torch.testing.assert_close(dropped[kept], 2 * undropped[kept])  # after dropout: kept weights scaled by 1/(1-p)


def test_gradient_checkpointing_keeps_maps():
    config = perceiver_io.PerceiverConfig.from_dict(
        {**SMALL_CONFIGS["PerceiverForMaskedLM"], "attention_probs_dropout_prob": 0.0}
    )
    model = randomize_(perceiver_io.PerceiverForMaskedLM(config)).train()
    inputs = small_inputs("PerceiverForMaskedLM")
    plain = model(**inputs, output_attentions=True, output_hidden_states=True)
    model.set_gradient_checkpointing(True)
    checkpointed = model(**inputs, output_attentions=True, output_hidden_states=True)
    for key in MAPS:
        _assert_same(checkpointed[key], plain[key], key)
    checkpointed.attentions[0].sum().backward()  # the maps are differentiable through the checkpointed layers
    assert model.perceiver.encoder.self_attns[0].attn.q.weight.grad is not None


# ---- ModelOutput: the same behaviour as transformers' on the same values ----


def _both(transformers_module, **fields):
    from transformers.models.perceiver.modeling_perceiver import PerceiverMaskedLMOutput as Reference

    return PerceiverMaskedLMOutput(**fields), Reference(**fields)


def _assert_same_views(ours, ref) -> None:
    assert list(ours.keys()) == list(ref.keys())
    assert list(ours) == list(ref)
    assert len(ours) == len(ref)
    for a, b in zip(ours.values(), ref.values(), strict=True):
        assert a is b
    assert [k for k, _ in ours.items()] == [k for k, _ in ref.items()]
    assert all(a is b for a, b in zip(ours.to_tuple(), ref.to_tuple(), strict=True))
    for index in (0, -1, slice(None, 2), slice(1, None)):
        a, b = ours[index], ref[index]
        assert (
            a is b if not isinstance(b, tuple) else len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
        )
    for name in ("loss", "logits", "hidden_states", "attentions", "cross_attentions", "other"):
        assert (name in ours) == (name in ref)
        assert ours.get(name) is ref.get(name)
        if name in ref:
            assert ours[name] is ref[name]
        else:
            with pytest.raises(KeyError):
                ref[name]
            with pytest.raises(KeyError, match=name):
                ours[name]


def test_model_output_reads_like_transformers(transformers_module):
    logits, hidden, cross = torch.randn(2, 3), (torch.randn(2, 4),), (torch.randn(2, 1, 4, 5),)
    ours, ref = _both(transformers_module, logits=logits, hidden_states=hidden, cross_attentions=cross)
    _assert_same_views(ours, ref)
    assert ours.loss is None and ours.attentions is None and ours.logits is logits
    assert dict(**ours).keys() == dict(**ref).keys()


def test_model_output_writes_like_transformers(transformers_module):
    logits, hidden, cross = torch.randn(2, 3), (torch.randn(2, 4),), (torch.randn(2, 1, 4, 5),)
    ours, ref = _both(transformers_module, logits=logits, hidden_states=hidden, cross_attentions=cross)
    new_logits, new_cross = torch.randn(2, 3), (torch.randn(2, 1, 4, 5),)
    for out in (ours, ref):
        out.logits = new_logits  # attribute → key view
        out["cross_attentions"] = new_cross  # key → attribute view
    _assert_same_views(ours, ref)
    assert ours.cross_attentions is new_cross and ours["logits"] is new_logits
    with pytest.raises(KeyError, match="no field 'other'"):
        ours["other"] = logits
    with pytest.raises(TypeError, match="indices are field names, integers or slices"):
        ours[1.0]


def test_model_output_keeps_field_order_when_a_field_is_set_later():
    """transformers appends a field set after construction to the end of its dict; ours keeps field order, so
    that ``to_tuple`` always has transformers' ``return_dict=False`` layout (loss first)."""
    logits, loss = torch.randn(2, 3), torch.tensor(1.0)
    out = PerceiverMaskedLMOutput(logits=logits)
    out.loss = loss
    assert list(out.keys()) == ["loss", "logits"] and out[0] is loss and out.to_tuple() == (loss, logits)
    out.loss = None
    assert list(out.keys()) == ["logits"] and "loss" not in out and out[0] is logits


def test_model_output_pickles_and_is_a_pytree():
    out = PerceiverMaskedLMOutput(logits=torch.randn(2, 3), attentions=(torch.randn(2, 4),))
    back = pickle.loads(pickle.dumps(out))
    assert list(back.keys()) == ["logits", "attentions"] and torch.equal(back.logits, out.logits)
    doubled = torch.utils._pytree.tree_map(lambda t: t * 2, out)
    assert isinstance(doubled, PerceiverMaskedLMOutput)
    torch.testing.assert_close(doubled.attentions[0], out.attentions[0] * 2)
