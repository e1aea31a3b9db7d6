"""Every head: forward shapes, gradients to every parameter, clear errors on bad input."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import SMALL_CONFIGS, assert_close_to_reference, randomize_, small_inputs

import perceiver_io
from perceiver_io import PerceiverConfig

HEADS = list(SMALL_CONFIGS)


def small_model(head: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(perceiver_io, head)(PerceiverConfig.from_dict({**SMALL_CONFIGS[head], **overrides}))


@pytest.mark.parametrize("head", HEADS)
def test_every_parameter_gets_a_gradient(head):
    model = randomize_(small_model(head)).train()  # random weights: the flow output layer starts at zero
    out = model(**small_inputs(head))
    logits = out.logits.values() if isinstance(out.logits, dict) else [out.logits]
    sum(t.float().square().mean() for t in logits).backward()
    # The label input is always replaced by its mask token, so its padding never reaches the output; image and
    # audio are masked with probability 0, so their mask tokens never do.
    unused = {f"perceiver.input_preprocessor.{p}" for p in ("padding.label", "mask.image", "mask.audio")}
    dead = [n for n, p in model.named_parameters() if n not in unused and (p.grad is None or not p.grad.any())]
    assert not dead


def test_multimodal_any_geometry_and_exact_chunking():
    """4 frames of 32×32 with 48 audio samples per frame (transformers' port hard-codes the paper's sizes)."""
    cfg = dict(
        SMALL_CONFIGS["PerceiverForMultimodalAutoencoding"],
        num_frames=4,
        image_size=8,
        audio_samples_per_frame=48,
        output_shape=[1, 4, 32, 32],
    )
    model = randomize_(small_model("PerceiverForMultimodalAutoencoding", **cfg))
    g = torch.Generator().manual_seed(0)
    inputs = {
        "image": torch.rand(2, 4, 3, 32, 32, generator=g),
        "audio": torch.randn(2, 192, 1, generator=g),
        "label": torch.zeros(2, 5),
    }
    with torch.no_grad():
        full = model(inputs=inputs).logits  # queries on the linspace(-1, 1) grid
        assert full["image"].shape == (2, 4 * 32 * 32, 3)
        assert full["audio"].shape == (2, 192)
        assert full["label"].shape == (2, 5)
        everything = {"image": torch.arange(4096), "audio": torch.arange(12)}  # the colab's -1 + 2i/N grid
        whole = model(inputs=inputs, subsampled_output_points=everything).logits
        chunks = [
            model(
                inputs=inputs,
                subsampled_output_points={
                    "image": torch.arange(i * 1024, (i + 1) * 1024),
                    "audio": torch.arange(i * 3, (i + 1) * 3),
                },
            ).logits
            for i in range(4)
        ]
    # Decoder queries never attend to each other, so decoding in chunks is exact up to rounding.
    for m in ("image", "audio"):
        assert_close_to_reference(torch.cat([c[m] for c in chunks], 1), whole[m])
    assert_close_to_reference(chunks[0]["label"], full["label"])


def test_optical_flow_any_frame_size():
    model = small_model("PerceiverForOpticalFlow")
    out = model(inputs=torch.randn(1, 2, 27, 20, 36))
    assert out.logits.shape == (1, 20, 36, 2)


def test_learned_positions_interpolate_like_transformers(transformers_module, tmp_path):
    head = "PerceiverForImageClassificationLearned"
    ref = randomize_(
        transformers_module.PerceiverForImageClassificationLearned(
            transformers_module.PerceiverConfig(**SMALL_CONFIGS[head])
        ),
        seed=2,
    )
    ref.save_pretrained(tmp_path)
    ours = perceiver_io.PerceiverForImageClassificationLearned.from_pretrained(tmp_path)
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        expected = ref(inputs=x, interpolate_pos_encoding=True).logits
        got = ours(inputs=x, interpolate_pos_encoding=True).logits
    assert_close_to_reference(got, expected)


# ---- bad input: each raises a clear error naming the offending value ----


def test_wrong_channel_count():
    model = small_model("PerceiverForImageClassificationFourier")
    with pytest.raises(ValueError, match=r"shape \(2, 4, 12, 10\); expected images \(B, 3, H, W\)"):
        model(inputs=torch.randn(2, 4, 12, 10))


def test_wrong_image_size_without_interpolation():
    model = small_model("PerceiverForImageClassificationLearned")
    with pytest.raises(ValueError, match=r"144 positions but the position table has 64.*interpolate_pos_encoding"):
        model(inputs=torch.randn(1, 3, 12, 12))


def test_sequence_longer_than_position_table():
    model = small_model("PerceiverForMaskedLM")
    with pytest.raises(ValueError, match=r"30 tokens is longer than the position table \(24\)"):
        model(inputs=torch.randint(6, 262, (1, 30)))


def test_token_ids_out_of_vocabulary():
    model = small_model("PerceiverForSequenceClassification")
    with pytest.raises(ValueError, match=r"\[0, 262\).*300"):
        model(inputs=torch.tensor([[5, 300]]))


def test_mask_batch_mismatch():
    model = small_model("PerceiverForSequenceClassification")
    with pytest.raises(ValueError, match=r"attention_mask has shape \(3, 24\).*\(2, 24\)"):
        model(inputs=torch.randint(6, 262, (2, 24)), attention_mask=torch.ones(3, 24))


def test_both_inputs_and_alias():
    model = small_model("PerceiverForImageClassificationFourier")
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="pixel_values"):
        model(inputs=x, pixel_values=x)


def test_multimodal_missing_modality():
    model = small_model("PerceiverForMultimodalAutoencoding")
    inputs = small_inputs("PerceiverForMultimodalAutoencoding")["inputs"]
    del inputs["audio"]
    with pytest.raises(ValueError, match=r"keys \['audio', 'image', 'label'\]; got \['image', 'label'\]"):
        model(inputs=inputs)


def test_config_inconsistent_with_checkpoint(tmp_path):
    model = small_model("PerceiverForImageClassificationFourier")
    model.save_pretrained(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"(?s)mis-shaped.*perceiver\.embeddings\.latents: checkpoint \(8, 32\) vs model \(16, 32\)",
    ):
        perceiver_io.PerceiverForImageClassificationFourier.from_pretrained(tmp_path, num_latents=16)
    with pytest.raises(ValueError, match=r"(?s)missing key.*self_attends\.2\."):
        perceiver_io.PerceiverForImageClassificationFourier.from_pretrained(tmp_path, num_self_attends_per_block=3)


def test_wrong_head_for_checkpoint(tmp_path):
    small_model("PerceiverForImageClassificationFourier").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"holds a PerceiverForImageClassificationFourier.*PerceiverForOpticalFlow"):
        perceiver_io.PerceiverForOpticalFlow.from_pretrained(tmp_path)


def test_invalid_config_values():
    with pytest.raises(ValueError, match=r"d_latents=30 is not divisible by num_self_attention_heads=8"):
        PerceiverConfig(d_latents=30)
    with pytest.raises(ValueError, match=r"hidden_act='relu'"):
        PerceiverConfig(hidden_act="relu")


def test_hub_id_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=r"could not fetch 'deepmind/vision-perceiver-fourier'.*network"):
        perceiver_io.PerceiverForImageClassificationFourier.from_pretrained("deepmind/vision-perceiver-fourier")


def test_missing_folder():
    with pytest.raises(FileNotFoundError, match="neither a model folder"):
        perceiver_io.PerceiverForMaskedLM.from_pretrained("/nonexistent/folder/x")


def test_released_parameter_counts():
    expected = {
        "language-perceiver": ("PerceiverForMaskedLM", 201_108_230),
        "vision-perceiver-learned": ("PerceiverForImageClassificationLearned", 62_255_848),
        "vision-perceiver-fourier": ("PerceiverForImageClassificationFourier", 48_440_627),
        "vision-perceiver-conv": ("PerceiverForImageClassificationConvProcessing", 48_646_522),
        "optical-flow-perceiver": ("PerceiverForOpticalFlow", 41_057_134),
        "multimodal-perceiver": ("PerceiverForMultimodalAutoencoding", 19_858_855),
    }
    for name, (head, count) in expected.items():
        with torch.device("meta"):
            model = getattr(perceiver_io, head)(PerceiverConfig.released(name))
        assert model.num_parameters() == count, name
    assert math.prod(PerceiverConfig.released("multimodal-perceiver").output_shape[1:]) == 16 * 224 * 224
