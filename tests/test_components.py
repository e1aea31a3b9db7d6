"""transformers' building blocks (preprocessors, decoders, postprocessors) under our names: same constructor
arguments, same parameters, same outputs on transformers' weights."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest
import torch
from conftest import SMALL_CONFIGS, assert_close_to_reference, randomize_, small_inputs

import perceiver_io
import perceiver_io.components as ours
from perceiver_io import PerceiverConfig, PerceiverModel
from perceiver_io.checkpoints.loading import load_transformers_state_dict, read_weights, transformers_state_dict
from perceiver_io.checkpoints.transformers_names import to_transformers_name

hf = pytest.importorskip("transformers.models.perceiver.modeling_perceiver")


def configs(cfg: dict) -> tuple:
    """The same configuration as transformers' and ours."""
    import transformers

    return transformers.PerceiverConfig(**cfg), PerceiverConfig.from_dict(cfg)


def component_table(component: torch.nn.Module, slot: str) -> dict[str, str]:
    """{our key: transformers' key} of one of our components placed at ``slot`` of a bare PerceiverModel."""
    prefixes = getattr(getattr(component, "queries", None), "hf_prefixes", {})
    dec = getattr(component, "hf_prefix", "decoder.")
    return {
        k: to_transformers_name(f"{slot}.{k}", "", dec, prefixes).removeprefix(f"{slot}.")
        for k in component.state_dict()
    }


def transformers_names(component: torch.nn.Module, slot: str) -> list[tuple[str, tuple[int, ...]]]:
    """Sorted (transformers' name, shape) of one of our components."""
    state = component.state_dict()
    return sorted((hf_name, tuple(state[k].shape)) for k, hf_name in component_table(component, slot).items())


def shapes(component: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return sorted((k, tuple(v.shape)) for k, v in component.state_dict().items())


# ---- (a) each component, transformers' defaults: same channels, same parameters -------------------------------

CFG = dict(SMALL_CONFIGS["PerceiverForMultimodalAutoencoding"], d_model=40, image_size=4)
FOURIER_2D = dict(num_bands=4, max_resolution=(8, 8))
FOURIER_3D = dict(num_bands=2, max_resolution=(2, 4, 4))


def pos_only(ns: ModuleType, cfg) -> dict:
    """Modality decoders of a multimodal decoder, as transformers' multimodal head builds them."""
    return {
        "audio": ns.PerceiverBasicDecoder(
            cfg,
            output_index_dims=(4,),
            output_num_channels=8,
            position_encoding_only=True,
            position_encoding_type="fourier",
            fourier_position_encoding_kwargs=dict(num_bands=3, max_resolution=(64,)),
        ),
        "image": ns.PerceiverBasicVideoAutoencodingDecoder(
            cfg,
            output_shape=[1, 2, 4, 4],
            output_num_channels=8,
            position_encoding_only=True,
            position_encoding_type="fourier",
            fourier_position_encoding_kwargs=FOURIER_3D,
        ),
        "label": ns.PerceiverClassificationDecoder(
            cfg,
            position_encoding_only=True,
            trainable_position_encoding_kwargs=dict(num_channels=6, index_dims=1),
        ),
    }


COMPONENTS: dict[str, tuple[str, Callable]] = {
    "text": ("input_preprocessor", lambda ns, c: ns.PerceiverTextPreprocessor(c)),
    "image": (
        "input_preprocessor",
        lambda ns, c: ns.PerceiverImagePreprocessor(c, fourier_position_encoding_kwargs=FOURIER_2D),
    ),
    "image_trainable": (
        "input_preprocessor",
        lambda ns, c: ns.PerceiverImagePreprocessor(
            c,
            prep_type="conv1x1",
            spatial_downsample=1,
            out_channels=16,
            position_encoding_type="trainable",
            project_pos_dim=16,
            trainable_position_encoding_kwargs=dict(num_channels=16, index_dims=c.image_size**2),
        ),
    ),
    "onehot": ("input_preprocessor", lambda ns, c: ns.PerceiverOneHotPreprocessor(c)),
    "audio": (
        "input_preprocessor",
        lambda ns, c: ns.PerceiverAudioPreprocessor(
            c, fourier_position_encoding_kwargs=dict(num_bands=8, max_resolution=(960,))
        ),
    ),
    "multimodal_pre": (
        "input_preprocessor",
        lambda ns, c: ns.PerceiverMultimodalPreprocessor(
            {"label": ns.PerceiverOneHotPreprocessor(c), "text": ns.PerceiverTextPreprocessor(c)},
            mask_probs={"label": 1.0},
        ),
    ),
    "basic": (
        "decoder",
        lambda ns, c: ns.PerceiverBasicDecoder(
            c, output_num_channels=7, trainable_position_encoding_kwargs=dict(index_dims=5, num_channels=128)
        ),
    ),
    "basic_fourier": (
        "decoder",
        lambda ns, c: ns.PerceiverBasicDecoder(
            c,
            output_num_channels=7,
            position_encoding_type="fourier",
            output_index_dims=(3, 5),
            num_channels=18,
            fourier_position_encoding_kwargs=FOURIER_2D,
            widening_factor=3,
            num_heads=2,
        ),
    ),
    "classification": (
        "decoder",
        lambda ns, c: ns.PerceiverClassificationDecoder(
            c, trainable_position_encoding_kwargs=dict(index_dims=1, num_channels=128)
        ),
    ),
    "flow": (
        "decoder",
        lambda ns, c: ns.PerceiverOpticalFlowDecoder(
            c,
            output_image_shape=(8, 12),
            num_channels=50,
            position_encoding_type="fourier",
            fourier_position_encoding_kwargs=FOURIER_2D,
        ),
    ),
    "video": (
        "decoder",
        lambda ns, c: ns.PerceiverBasicVideoAutoencodingDecoder(
            c,
            output_shape=[1, 2, 4, 4],
            position_encoding_type="fourier",
            output_num_channels=8,
            num_channels=15,
            fourier_position_encoding_kwargs=FOURIER_3D,
        ),
    ),
    "multimodal_dec": (
        "decoder",
        lambda ns, c: ns.PerceiverMultimodalDecoder(
            c, modalities=pos_only(ns, c), num_outputs=None, output_num_channels=8
        ),
    ),
    "projection_post": ("output_postprocessor", lambda ns, c: ns.PerceiverProjectionPostprocessor(16, 3)),
    "audio_post": ("output_postprocessor", lambda ns, c: ns.PerceiverAudioPostprocessor(c, in_channels=16)),
    "classification_post": (
        "output_postprocessor",
        lambda ns, c: ns.PerceiverClassificationPostprocessor(c, in_channels=16),
    ),
    "multimodal_post": (
        "output_postprocessor",
        lambda ns, c: ns.PerceiverMultimodalPostprocessor(
            {
                "audio": ns.PerceiverAudioPostprocessor(c, in_channels=16),
                "image": ns.PerceiverProjectionPostprocessor(16, 3),
            }
        ),
    ),
    "embedding_decoder": ("embedding_decoder", lambda ns, c: ns.PerceiverEmbeddingDecoder(c)),
}


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_component_has_transformers_parameters(name):
    slot, build = COMPONENTS[name]
    hf_cfg, our_cfg = configs(CFG)
    ref, mine = build(hf, hf_cfg), build(ours, our_cfg)
    assert transformers_names(mine, slot) == shapes(ref)
    for attr in ("num_channels", "num_query_channels"):
        if hasattr(ref, attr):
            assert getattr(mine, attr) == getattr(ref, attr), attr


# ---- (b) whole compositions: transformers' seven heads and its two docstring examples ---------------------------


def mlm(ns, c):
    pre = ns.PerceiverTextPreprocessor(c)
    decoder = ns.PerceiverBasicDecoder(
        c,
        output_num_channels=c.d_latents,
        output_index_dims=c.max_position_embeddings,
        num_channels=pre.num_channels,
        qk_channels=8 * 32,
        v_channels=pre.num_channels,
        num_heads=8,
        use_query_residual=False,
        final_project=False,
        trainable_position_encoding_kwargs=dict(num_channels=pre.num_channels, index_dims=c.max_position_embeddings),
    )
    return dict(input_preprocessor=pre, decoder=decoder)


def classification_decoder(ns, c):
    return ns.PerceiverClassificationDecoder(
        c,
        num_channels=c.d_latents,
        trainable_position_encoding_kwargs=dict(num_channels=c.d_latents, index_dims=1),
        use_query_residual=True,
    )


def text_classification(ns, c):
    """transformers' sequence classifier, and its PerceiverModel docstring's example 1."""
    return dict(input_preprocessor=ns.PerceiverTextPreprocessor(c), decoder=classification_decoder(ns, c))


def image_learned(ns, c):
    """transformers' learned-position image classifier, and its PerceiverModel docstring's example 2."""
    pre = ns.PerceiverImagePreprocessor(
        c,
        prep_type="conv1x1",
        spatial_downsample=1,
        out_channels=256,
        position_encoding_type="trainable",
        concat_or_add_pos="concat",
        project_pos_dim=256,
        trainable_position_encoding_kwargs=dict(num_channels=256, index_dims=c.image_size**2),
    )
    return dict(input_preprocessor=pre, decoder=classification_decoder(ns, c))


def image_fourier(ns, c):
    fourier = dict(concat_pos=True, max_resolution=(224, 224), num_bands=64, sine_only=False)
    pre = ns.PerceiverImagePreprocessor(
        c, prep_type="pixels", spatial_downsample=1, fourier_position_encoding_kwargs=fourier
    )
    return dict(input_preprocessor=pre, decoder=classification_decoder(ns, c))


def image_conv(ns, c):
    fourier = dict(concat_pos=True, max_resolution=(56, 56), num_bands=64, sine_only=False)
    pre = ns.PerceiverImagePreprocessor(
        c,
        prep_type="conv",
        spatial_downsample=1,
        position_encoding_type="fourier",
        fourier_position_encoding_kwargs=fourier,
    )
    return dict(input_preprocessor=pre, decoder=classification_decoder(ns, c))


def optical_flow(ns, c):
    fourier = dict(num_bands=64, max_resolution=c.train_size, sine_only=False, concat_pos=True)
    pre = ns.PerceiverImagePreprocessor(
        c,
        prep_type="patches",
        spatial_downsample=1,
        conv_after_patching=True,
        conv_after_patching_in_channels=54,
        temporal_downsample=2,
        position_encoding_type="fourier",
        fourier_position_encoding_kwargs=fourier,
    )
    decoder = ns.PerceiverOpticalFlowDecoder(
        c,
        num_channels=pre.num_channels,
        output_image_shape=c.train_size,
        rescale_factor=100.0,
        use_query_residual=False,
        output_num_channels=2,
        position_encoding_type="fourier",
        fourier_position_encoding_kwargs=fourier,
    )
    return dict(input_preprocessor=pre, decoder=decoder)


def label_channels(c) -> int:
    """The label query width: ``_label_trainable_num_channels`` in transformers' config, without "_" in ours."""
    return getattr(c, "label_trainable_num_channels", None) or c._label_trainable_num_channels


def multimodal(ns, c):
    n_audio = c.num_frames * c.audio_samples_per_frame
    audio_pos = dict(num_bands=192, max_resolution=(n_audio,), sine_only=False, concat_pos=True)
    video_pos = dict(
        num_bands=32, max_resolution=(c.num_frames, c.image_size, c.image_size), sine_only=False, concat_pos=True
    )
    pre = ns.PerceiverMultimodalPreprocessor(
        min_padding_size=4,
        modalities={
            "audio": ns.PerceiverAudioPreprocessor(
                c,
                position_encoding_type="fourier",
                fourier_position_encoding_kwargs=audio_pos,
                prep_type="patches",
                samples_per_patch=c.samples_per_patch,
            ),
            "image": ns.PerceiverImagePreprocessor(
                c,
                position_encoding_type="fourier",
                fourier_position_encoding_kwargs=video_pos,
                prep_type="patches",
                spatial_downsample=4,
                temporal_downsample=1,
            ),
            "label": ns.PerceiverOneHotPreprocessor(c),
        },
        mask_probs={"image": 0.0, "audio": 0.0, "label": 1.0},
    )
    common = dict(concat_preprocessed_input=False, use_query_residual=False, position_encoding_only=True)
    modalities = {
        "audio": ns.PerceiverBasicDecoder(
            c,
            output_index_dims=(n_audio // c.samples_per_patch,),
            output_num_channels=c.output_num_channels,
            position_encoding_type="fourier",
            fourier_position_encoding_kwargs=audio_pos,
            **common,
        ),
        "image": ns.PerceiverBasicVideoAutoencodingDecoder(
            c,
            output_shape=c.output_shape,
            output_num_channels=c.output_num_channels,
            position_encoding_type="fourier",
            fourier_position_encoding_kwargs=video_pos,
            **common,
        ),
        "label": ns.PerceiverClassificationDecoder(
            c,
            position_encoding_type="trainable",
            trainable_position_encoding_kwargs=dict(num_channels=label_channels(c), index_dims=1),
            **common,
        ),
    }
    decoder = ns.PerceiverMultimodalDecoder(
        c,
        concat_preprocessed_input=False,
        modalities=modalities,
        num_outputs=None,
        output_num_channels=c.output_num_channels,
        use_query_residual=False,
    )
    post = ns.PerceiverMultimodalPostprocessor(
        modalities={
            "audio": ns.PerceiverAudioPostprocessor(c, in_channels=c.output_num_channels),
            "image": ns.PerceiverProjectionPostprocessor(in_channels=c.output_num_channels, out_channels=3),
            "label": ns.PerceiverClassificationPostprocessor(c, in_channels=c.output_num_channels),
        }
    )
    return dict(input_preprocessor=pre, decoder=decoder, output_postprocessor=post)


def text_custom_decoder(ns, c):
    """Options no head uses: a wider, multi-head classification decoder, queries led by the token embeddings."""
    decoder = ns.PerceiverBasicDecoder(
        c,
        output_num_channels=5,
        output_index_dims=c.max_position_embeddings,
        num_channels=c.d_model + 8,
        num_heads=2,
        widening_factor=3,
        qk_channels=16,
        v_channels=24,
        use_query_residual=True,
        concat_preprocessed_input=True,
        trainable_position_encoding_kwargs=dict(num_channels=8, index_dims=c.max_position_embeddings),
    )
    return dict(input_preprocessor=ns.PerceiverTextPreprocessor(c), decoder=decoder)


COMPOSITIONS = {
    "masked_lm": (mlm, "PerceiverForMaskedLM", {}),
    "sequence_classification": (text_classification, "PerceiverForSequenceClassification", {}),
    "docstring_example_1_text": (text_classification, "PerceiverForSequenceClassification", {}),
    "image_learned": (image_learned, "PerceiverForImageClassificationLearned", {}),
    "docstring_example_2_image": (image_learned, "PerceiverForImageClassificationLearned", {}),
    "image_fourier": (image_fourier, "PerceiverForImageClassificationFourier", {}),
    "image_conv": (image_conv, "PerceiverForImageClassificationConvProcessing", {}),
    "optical_flow": (optical_flow, "PerceiverForOpticalFlow", {}),
    "multimodal": (multimodal, "PerceiverForMultimodalAutoencoding", {}),
    "text_custom_decoder": (text_custom_decoder, "PerceiverForSequenceClassification", {}),
    # transformers sizes every cross-attention's keys by this field, the decoder's included.
    "query_shaped_attention": (
        text_classification,
        "PerceiverForSequenceClassification",
        dict(cross_attention_shape_for_attention="q"),
    ),
}


def loaded_pair(compose: Callable, cfg: dict, folder) -> tuple[torch.nn.Module, torch.nn.Module]:
    """transformers' PerceiverModel with random weights, and ours built the same way, loaded from its folder."""
    hf_cfg, our_cfg = configs(cfg)
    torch.manual_seed(0)
    ref = randomize_(hf.PerceiverModel(hf_cfg, **compose(hf, hf_cfg)), seed=1)
    ref.save_pretrained(folder)
    mine = PerceiverModel(our_cfg, **compose(ours, our_cfg))
    load_transformers_state_dict(mine, read_weights(folder))
    return ref, mine.eval()


def assert_same_logits(got, expected) -> None:
    if isinstance(expected, dict):
        assert sorted(got) == sorted(expected)
        for key in expected:
            assert_close_to_reference(got[key], expected[key])
    else:
        assert_close_to_reference(got, expected)


@pytest.mark.parametrize("name", list(COMPOSITIONS))
@torch.no_grad()
def test_composition_matches_transformers(name, tmp_path):
    """transformers' weights → ours: same logits; then new weights of ours → transformers: same logits again."""
    compose, head, overrides = COMPOSITIONS[name]
    cfg = {**SMALL_CONFIGS[head], **overrides}
    ref, mine = loaded_pair(compose, cfg, tmp_path)
    inputs = small_inputs(head)
    assert_same_logits(mine(**inputs).logits, ref(**inputs).logits)

    randomize_(mine, seed=7)  # weights transformers has not seen: the check cannot pass by rereading them
    hf_cfg = configs(cfg)[0]
    back = hf.PerceiverModel(hf_cfg, **compose(hf, hf_cfg)).eval()
    back.load_state_dict(transformers_state_dict(mine), strict=True)
    assert_same_logits(mine(**inputs).logits, back(**inputs).logits)


@torch.no_grad()
def test_transformers_decoder_interface(tmp_path):
    """decoder_query + the decoder call, as transformers' PerceiverModel drives them, give our forward's logits."""
    ref, mine = loaded_pair(multimodal, SMALL_CONFIGS["PerceiverForMultimodalAutoencoding"], tmp_path)
    inputs = small_inputs("PerceiverForMultimodalAutoencoding")
    x, sizes, without_pos = mine.input_preprocessor(inputs["inputs"])
    points = inputs["subsampled_output_points"]
    query = mine.decoder.decoder_query(x, sizes, without_pos, subsampled_points=points)
    expected = ref.decoder.decoder_query(*ref.input_preprocessor(inputs["inputs"]), subsampled_points=points)
    assert mine.decoder.num_query_channels == ref.decoder.num_query_channels
    assert_close_to_reference(query, expected)
    out = mine.decoder(query, mine(**inputs).last_hidden_state).logits
    assert_close_to_reference(out, ref.decoder(expected, ref(**inputs).last_hidden_state).logits)


@torch.no_grad()
def test_projection_decoder_pools_the_latents():
    """transformers' PerceiverProjectionDecoder cannot be built (abstract num_query_channels): check the closed form."""
    _, cfg = configs(SMALL_CONFIGS["PerceiverForSequenceClassification"])
    model = randomize_(PerceiverModel(cfg, decoder=ours.PerceiverProjectionDecoder(cfg)))
    x = torch.randn(2, 5, cfg.d_model)
    out = model(inputs=x)
    w, b = model.decoder.classifier.weight, model.decoder.classifier.bias
    assert_close_to_reference(out.logits, out.last_hidden_state.mean(dim=1) @ w.T + b)
    assert out.logits.shape == (2, cfg.num_labels)


# ---- (c) every image preprocessing transformers supports --------------------------------------------------------

# (prep_type, constructor arguments, input shape) per case; position arguments are added per encoding below.
IMAGE_CASES = {
    "conv": (dict(prep_type="conv", spatial_downsample=4, out_channels=16), (2, 3, 16, 16), 16, (3, 3)),
    "conv_no_batchnorm": (
        dict(prep_type="conv", spatial_downsample=1, out_channels=16, conv2d_use_batchnorm=False),
        (2, 3, 16, 16),
        16,
        (3, 3),
    ),
    "conv1x1": (dict(prep_type="conv1x1", spatial_downsample=2, out_channels=16), (2, 3, 6, 8), 16, (3, 4)),
    "patches": (dict(prep_type="patches", spatial_downsample=2), (2, 3, 8, 6), 12, (4, 3)),
    "patches_video": (
        dict(prep_type="patches", spatial_downsample=2, temporal_downsample=2),
        (2, 4, 3, 4, 4),
        24,
        (2, 2, 2),
    ),
    "patches_conv_after": (
        dict(
            prep_type="patches",
            spatial_downsample=1,
            temporal_downsample=2,
            conv_after_patching=True,
            conv_after_patching_in_channels=6,
            out_channels=8,
            in_channels=3,
        ),
        (2, 2, 3, 4, 5),
        8,
        (4, 5),
    ),
    "pixels": (dict(prep_type="pixels", spatial_downsample=1, in_channels=4), (2, 4, 5, 3), 4, (5, 3)),
    "pixels_video": (
        dict(prep_type="pixels", spatial_downsample=2, temporal_downsample=2, in_channels=6),
        (2, 4, 6, 6, 4),
        6,
        (2, 3, 2),
    ),
}


def position_kwargs(encoding: str, how: str, feature_channels: int, grid: tuple[int, ...]) -> dict:
    """Position arguments whose width fits ``feature_channels`` when added."""
    d = len(grid)
    if encoding == "trainable":
        return dict(
            trainable_position_encoding_kwargs=dict(
                index_dims=grid, num_channels=feature_channels if how == "add" else 5
            )
        )
    if how == "add":  # transformers' Fourier features add only without the raw positions (2·d·bands channels)
        bands = feature_channels // (2 * d)
        if bands * 2 * d != feature_channels:
            pytest.skip(f"{feature_channels} channels are not 2·{d}·bands")
        fourier = dict(num_bands=bands, max_resolution=tuple(2 * n for n in grid), concat_pos=False)
    else:
        fourier = dict(num_bands=3, max_resolution=tuple(2 * n for n in grid), sine_only=True)
    return dict(fourier_position_encoding_kwargs=fourier)


def image_pair(kwargs: dict, seed: int = 1) -> tuple[torch.nn.Module, torch.nn.Module]:
    hf_cfg, our_cfg = configs(CFG)
    ref = randomize_(hf.PerceiverImagePreprocessor(hf_cfg, **kwargs), seed=seed)
    mine = ours.PerceiverImagePreprocessor(our_cfg, **kwargs)
    assert transformers_names(mine, "input_preprocessor") == shapes(ref)
    assert mine.num_channels == ref.num_channels
    load_component(mine, ref, "input_preprocessor")
    return ref, mine.eval()


@pytest.mark.parametrize("how", ["concat", "add"])
@pytest.mark.parametrize("encoding", ["trainable", "fourier"])
@pytest.mark.parametrize("case", list(IMAGE_CASES))
@torch.no_grad()
def test_image_preprocessor_matches_transformers(case, encoding, how):
    kwargs, shape, channels, grid = IMAGE_CASES[case]
    kwargs = dict(kwargs, position_encoding_type=encoding, concat_or_add_pos=how)
    kwargs.update(position_kwargs(encoding, how, channels, grid))
    ref, mine = image_pair(kwargs)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    expected, got = ref(x), mine(x)
    assert got[1] is None and expected[1] is None
    assert_close_to_reference(got[0], expected[0])
    assert_close_to_reference(got[2], expected[2])


@torch.no_grad()
def test_image_preprocessor_projection_and_interpolation_match_transformers():
    """The learned-position classifier's preprocessing at another image size (interpolate_pos_encoding)."""
    kwargs = dict(
        prep_type="conv1x1",
        spatial_downsample=1,
        out_channels=16,
        position_encoding_type="trainable",
        project_pos_dim=16,
        trainable_position_encoding_kwargs=dict(num_channels=16, index_dims=16),
    )
    ref, mine = image_pair(kwargs)
    x = torch.randn(2, 3, 6, 5)
    expected = ref(x, interpolate_pos_encoding=True)[0]
    assert_close_to_reference(mine(x, interpolate_pos_encoding=True)[0], expected)
    # Fourier positions fit any grid: interpolation changes nothing, in transformers and here.
    ref, mine = image_pair(dict(prep_type="pixels", spatial_downsample=1, fourier_position_encoding_kwargs=FOURIER_2D))
    expected = ref(x, interpolate_pos_encoding=True)[0]
    assert_close_to_reference(mine(x, interpolate_pos_encoding=True)[0], expected)


@pytest.mark.parametrize("how", ["concat", "add"])
@pytest.mark.parametrize("encoding", ["trainable", "fourier"])
@torch.no_grad()
def test_audio_preprocessor_matches_transformers(encoding, how):
    hf_cfg, our_cfg = configs(CFG)
    n = 6
    if encoding == "trainable":
        pos = dict(trainable_position_encoding_kwargs=dict(index_dims=n, num_channels=8 if how == "add" else 5))
    else:
        pos = dict(fourier_position_encoding_kwargs=dict(num_bands=4, max_resolution=(48,), concat_pos=how == "concat"))
    kwargs = dict(samples_per_patch=8, position_encoding_type=encoding, concat_or_add_pos=how, **pos)
    ref = randomize_(hf.PerceiverAudioPreprocessor(hf_cfg, **kwargs), seed=1)
    mine = ours.PerceiverAudioPreprocessor(our_cfg, **kwargs)
    assert mine.num_channels == ref.num_channels
    load_component(mine, ref, "input_preprocessor")
    x = torch.randn(2, n * 8, 1)
    expected, got = ref(x), mine(x)
    assert_close_to_reference(got[0], expected[0])
    assert_close_to_reference(got[2], expected[2])


def load_component(mine: torch.nn.Module, ref: torch.nn.Module, slot: str) -> None:
    """Copy transformers' weights into our component through the name table."""
    state = ref.state_dict()
    mine.load_state_dict({k: state[n] for k, n in component_table(mine, slot).items()})


# ---- (d) what we do not support raises, naming it ------------------------------------------------------------


def _image(c, **kw):
    return ours.PerceiverImagePreprocessor(c, **{"fourier_position_encoding_kwargs": FOURIER_2D, **kw})


def _basic(c, **kw):
    kwargs = dict(output_num_channels=4, trainable_position_encoding_kwargs=dict(index_dims=2, num_channels=128))
    return ours.PerceiverBasicDecoder(c, **{**kwargs, **kw})


REFUSED: dict[str, tuple[Callable, str]] = {
    "prep_type": (lambda c: _image(c, prep_type="bogus"), "prep_type='bogus'"),
    "conv_downsample": (lambda c: _image(c, spatial_downsample=16), "spatial_downsample=16"),
    "conv_time": (lambda c: _image(c, temporal_downsample=2), "temporal_downsample"),
    "pixels_stride": (lambda c: _image(c, prep_type="pixels", spatial_downsample=2), "spatial_downsample=2"),
    "conv_after_patching": (lambda c: _image(c, prep_type="conv1x1", conv_after_patching=True), "conv_after_patching"),
    "batchnorm": (
        lambda c: _image(c, prep_type="pixels", spatial_downsample=1, conv2d_use_batchnorm=False),
        "conv2d_use_batchnorm",
    ),
    "image_none": (lambda c: _image(c, position_encoding_type="none"), "position_encoding_type='none'"),
    "concat_or_add": (lambda c: _image(c, concat_or_add_pos="mul"), "concat_or_add_pos='mul'"),
    "project_pos_dim": (lambda c: _image(c, project_pos_dim=32), "project_pos_dim=32"),
    "missing_kwargs": (lambda c: ours.PerceiverImagePreprocessor(c), "fourier_position_encoding_kwargs"),
    "audio_prep": (lambda c: ours.PerceiverAudioPreprocessor(c, prep_type="conv"), "prep_type='conv'"),
    "audio_post": (lambda c: ours.PerceiverAudioPostprocessor(c, 8, postproc_type="pixels"), "postproc_type='pixels'"),
    "decoder_none": (lambda c: _basic(c, position_encoding_type="none"), "position_encoding_type='none'"),
    "decoder_subsampled": (lambda c: _basic(c, subsampled_index_dims=2), "subsampled_index_dims=2"),
    "decoder_project": (lambda c: _basic(c, project_pos_dim=8), "project_pos_dim"),
    "decoder_width": (lambda c: _basic(c, num_channels=64), "num_channels=64"),
    "decoder_fourier_dims": (
        lambda c: _basic(c, position_encoding_type="fourier", fourier_position_encoding_kwargs=FOURIER_2D),
        "output_index_dims",
    ),
    "flow_trainable": (
        lambda c: ours.PerceiverOpticalFlowDecoder(
            c, output_image_shape=(2, 2), trainable_position_encoding_kwargs=dict(index_dims=4)
        ),
        "position_encoding_type='trainable'",
    ),
    "video_shape": (
        lambda c: ours.PerceiverBasicVideoAutoencodingDecoder(c, output_shape=[2, 2], position_encoding_type="fourier"),
        "output_shape=(2, 2)",
    ),
    "multimodal_full_decoder": (
        lambda c: ours.PerceiverMultimodalDecoder(c, {"a": _basic(c)}, num_outputs=None, output_num_channels=4),
        "position_encoding_only=True",
    ),
    "multimodal_concat": (
        lambda c: ours.PerceiverMultimodalDecoder(
            c, pos_only(ours, c), num_outputs=None, output_num_channels=4, concat_preprocessed_input=True
        ),
        "concat_preprocessed_input=True",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_unsupported_arguments_raise(name):
    build, message = REFUSED[name]
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build(configs(CFG)[1])


def test_unknown_keywords_raise_type_error():
    _, c = configs(CFG)
    with pytest.raises(TypeError, match="bogus"):
        _image(c, bogus=1)
    with pytest.raises(TypeError, match="num_band"):
        _image(c, fourier_position_encoding_kwargs=dict(num_band=4, max_resolution=(8, 8)))
    with pytest.raises(TypeError, match="bogus"):
        _basic(c, bogus=1)
    with pytest.raises(TypeError, match="output_num_channels"):
        ours.PerceiverClassificationDecoder(c, output_num_channels=3)


def test_unsupported_call_arguments_raise():
    _, c = configs(CFG)
    image, text = _image(c), ours.PerceiverTextPreprocessor(c)
    x, ids = torch.randn(1, 3, 16, 16), torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="pos=None"):
        image(x, pos=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="network_input_is_1d=True"):
        image(x, network_input_is_1d=False)
    with pytest.raises(ValueError, match="interpolate_pos_encoding=False"):
        text(ids, interpolate_pos_encoding=True)
    post = ours.PerceiverProjectionPostprocessor(4, 2)
    with pytest.raises(ValueError, match="pos=None"):
        post(torch.randn(1, 2, 4), pos=torch.zeros(1))
    with pytest.raises(ValueError, match="modality_sizes=None"):
        post(torch.randn(1, 2, 4), modality_sizes={"a": 2})
    decoder = pos_only(ours, c)["label"]
    with pytest.raises(ValueError, match="position_encoding_only=True"):
        decoder(torch.zeros(1, 1, 6), torch.zeros(1, 8, c.d_latents))


def test_components_are_exported():
    assert set(ours.__all__) <= set(perceiver_io.__all__)
    for name in ours.__all__:
        assert hasattr(hf, name), name
