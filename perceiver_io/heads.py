"""The seven task models of transformers' Perceiver, as thin compositions of adapters, encoder and decoders.

Class names, constructor (a config) and call conventions (``inputs=``, ``attention_mask=``, ``labels=``) match
transformers, so swapping the import is enough. Geometry that transformers hard-codes is taken from the config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from perceiver_io.adapters.audio import AudioPostprocessor, AudioPreprocessor
from perceiver_io.adapters.image import ImagePreprocessor, ProjectionPostprocessor
from perceiver_io.adapters.label import ClassificationPostprocessor, OneHotPreprocessor
from perceiver_io.adapters.multimodal import MultimodalPostprocessor, MultimodalPreprocessor
from perceiver_io.adapters.text import EmbeddingDecoder, TextPreprocessor
from perceiver_io.checks import check_class_labels, check_like, check_token_labels
from perceiver_io.components.decoders import PerceiverBasicDecoder, PerceiverClassificationDecoder
from perceiver_io.config import PerceiverConfig
from perceiver_io.decoders import PerceiverDecoder
from perceiver_io.layers.position import FourierPositionEncoding, TrainablePositionEncoding
from perceiver_io.model import PerceiverModel, PerceiverPreTrainedModel, config_default, transformers_tuple
from perceiver_io.outputs import (
    ModelOutput,
    PerceiverClassifierOutput,
    PerceiverMaskedLMOutput,
    PerceiverModelOutput,
)
from perceiver_io.queries import FourierQueries, InputQueries, MultimodalQueries, TrainableQueries


def _one_of(inputs: torch.Tensor | None, alias: torch.Tensor | None, alias_name: str) -> torch.Tensor:
    if inputs is not None and alias is not None:
        raise ValueError(f"pass either `inputs` or `{alias_name}`, not both")
    if inputs is None and alias is None:
        raise ValueError(f"no input given: pass `inputs` (or `{alias_name}`)")
    return inputs if inputs is not None else alias


def _finish(
    output_class: type[ModelOutput],
    loss: torch.Tensor | None,
    logits: torch.Tensor | dict[str, torch.Tensor],
    model_output: PerceiverModelOutput,
    return_dict: bool | None,
    config: PerceiverConfig,
) -> ModelOutput | tuple:
    """A head's output: its loss and logits, the model's hidden states and attention maps; transformers' tuple when
    ``return_dict`` (None: the config's) is False."""
    out = output_class(
        loss=loss,
        logits=logits,
        hidden_states=model_output.hidden_states,
        attentions=model_output.attentions,
        cross_attentions=model_output.cross_attentions,
    )
    return out if config_default(return_dict, config.return_dict, "return_dict") else transformers_tuple(out)


def classification_decoder(config: PerceiverConfig) -> PerceiverClassificationDecoder:
    """One learned query of width d_latents → (B, num_labels) logits, as transformers' heads build it (DeepMind's
    ``ClassificationDecoder``); ``config.decoder_query_residual`` may drop the query residual."""
    residual = True if config.decoder_query_residual is None else config.decoder_query_residual
    return PerceiverClassificationDecoder(
        config,
        num_channels=config.d_latents,
        trainable_position_encoding_kwargs=dict(num_channels=config.d_latents, index_dims=1),
        use_query_residual=residual,
    )


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: PerceiverConfig) -> torch.Tensor:
    """transformers' rule: regression for one label, CE for integer labels, BCE for multi-label float targets."""
    check_class_labels(labels, logits, config.problem_type)
    problem = config.problem_type
    if problem is None:
        if config.num_labels == 1:
            problem = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
    if problem == "regression":
        return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
    if problem == "single_label_classification":
        return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1))
    if problem == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    raise ValueError(f"problem_type={problem!r} is not one of regression/single_label/multi_label_classification")


class PerceiverForMaskedLM(PerceiverPreTrainedModel):
    """UTF-8 bytes in, byte logits (B, max_position_embeddings, vocab) out, tied to the input embedding."""

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__(config)
        decoder = PerceiverBasicDecoder(
            config,
            output_num_channels=config.d_latents,
            output_index_dims=config.max_position_embeddings,
            num_channels=config.d_model,
            qk_channels=8 * 32,
            v_channels=config.d_model,
            num_heads=8,
            final_project=False,
            trainable_position_encoding_kwargs=dict(
                num_channels=config.d_model, index_dims=config.max_position_embeddings
            ),
        )
        self.perceiver = PerceiverModel(config, decoder=decoder, input_preprocessor=TextPreprocessor(config))
        self.embedding_decoder = EmbeddingDecoder(config)
        self.init_weights()

    def forward(
        self,
        inputs: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        input_ids: torch.Tensor | None = None,
    ) -> PerceiverMaskedLMOutput | tuple:
        """inputs: (B, T) byte ids, T ≤ max_position_embeddings; labels: (B, T') with -100 where ignored."""
        inputs = _one_of(inputs, input_ids, "input_ids")
        query_mask = None
        if self.config.mask_decoder_queries and attention_mask is not None:
            # DeepMind masks the decoder's queries with the input mask; queries past the input are padding.
            pad = self.config.max_position_embeddings - attention_mask.shape[-1]
            query_mask = F.pad(attention_mask, (0, max(pad, 0)))
        out = self.perceiver(
            inputs,
            attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            query_mask=query_mask,
        )
        logits = self.embedding_decoder(out.logits, self.perceiver.input_preprocessor.embeddings.weight)
        loss = None
        if labels is not None:
            check_token_labels(labels, logits.shape[0], logits.shape[1], self.config.vocab_size)
            loss = F.cross_entropy(logits[:, : labels.shape[1]].reshape(-1, logits.shape[-1]), labels.reshape(-1))
        return _finish(PerceiverMaskedLMOutput, loss, logits, out, return_dict, self.config)


class PerceiverForSequenceClassification(PerceiverPreTrainedModel):
    """UTF-8 bytes in, (B, num_labels) logits out."""

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__(config)
        self.perceiver = PerceiverModel(
            config, decoder=classification_decoder(config), input_preprocessor=TextPreprocessor(config)
        )
        self.init_weights()

    def forward(
        self,
        inputs: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        input_ids: torch.Tensor | None = None,
    ) -> PerceiverClassifierOutput | tuple:
        """inputs: (B, T) byte ids; labels: (B,) class ids (or targets, see ``classification_loss``)."""
        out = self.perceiver(
            _one_of(inputs, input_ids, "input_ids"),
            attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = out.logits
        loss = None if labels is None else classification_loss(logits, labels, self.config)
        return _finish(PerceiverClassifierOutput, loss, logits, out, return_dict, self.config)


class _ImageClassifier(PerceiverPreTrainedModel):
    """Images (B, 3, H, W) → (B, num_labels); subclasses only choose the preprocessor."""

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__(config)
        self.perceiver = PerceiverModel(
            config, decoder=classification_decoder(config), input_preprocessor=self.preprocessor(config)
        )
        self.init_weights()

    @staticmethod
    def preprocessor(config: PerceiverConfig) -> ImagePreprocessor:
        raise NotImplementedError

    def forward(
        self,
        inputs: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> PerceiverClassifierOutput | tuple:
        """inputs: (B, 3, H, W) images; labels: (B,) class ids (or targets, see ``classification_loss``)."""
        out = self.perceiver(
            _one_of(inputs, pixel_values, "pixel_values"),
            attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
        )
        logits = out.logits
        loss = None if labels is None else classification_loss(logits, labels, self.config)
        return _finish(PerceiverClassifierOutput, loss, logits, out, return_dict, self.config)


class PerceiverForImageClassificationLearned(_ImageClassifier):
    """1×1 conv to 256 channels + a learned image_size² position table projected to 256, concatenated."""

    @staticmethod
    def preprocessor(config: PerceiverConfig) -> ImagePreprocessor:
        return ImagePreprocessor(
            "conv1x1",
            out_channels=256,
            position=TrainablePositionEncoding(config.image_size**2, 256),
            project_pos_dim=256,
        )


class PerceiverForImageClassificationFourier(_ImageClassifier):
    """Raw RGB pixels + 2-d Fourier features (64 bands, max resolution 224)."""

    @staticmethod
    def preprocessor(config: PerceiverConfig) -> ImagePreprocessor:
        return ImagePreprocessor("pixels", position=FourierPositionEncoding(64, (224, 224)))


class PerceiverForImageClassificationConvProcessing(_ImageClassifier):
    """Conv 7×7 stem (4× down, 64 channels) + 2-d Fourier features (64 bands, max resolution 56)."""

    @staticmethod
    def preprocessor(config: PerceiverConfig) -> ImagePreprocessor:
        return ImagePreprocessor(
            "conv",
            out_channels=64,
            spatial_downsample=4,
            position=FourierPositionEncoding(64, (56, 56)),
            stem_padding=config.conv_stem_padding,
        )


class PerceiverForOpticalFlow(PerceiverPreTrainedModel):
    """Two frames as 3×3 patches (B, 2, 27, H, W) → flow (B, H, W, 2); every input pixel is a decoder query.

    The output is the decoder's prediction / 100 (transformers' convention); DeepMind's colab multiplies it by 20
    to get pixels. Any H×W works: positions are Fourier features relative to ``train_size``.
    """

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__(config)
        preprocessor = ImagePreprocessor(
            "patches",
            in_channels=27,
            out_channels=64,
            temporal_downsample=2,
            conv_after_patching_in=54,
            position=FourierPositionEncoding(64, config.train_size),
        )
        decoder = PerceiverDecoder(config, InputQueries(preprocessor.num_channels), final_channels=2)
        self.perceiver = PerceiverModel(config, decoder=decoder, input_preprocessor=preprocessor)
        self.init_weights()
        torch.nn.init.zeros_(decoder.final.weight)  # DeepMind zero-initialises the flow output layer

    def forward(
        self,
        inputs: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> PerceiverClassifierOutput | tuple:
        """inputs: (B, 2, 27, H, W) (see ``adapters.image.patches_for_flow``); labels: flow (B, H, W, 2), for the
        end-point-error loss (transformers has no flow loss)."""
        if inputs is None or inputs.dim() != 5 or inputs.shape[1:3] != (2, 27):
            shape = None if inputs is None else tuple(inputs.shape)
            raise ValueError(f"optical flow inputs must be (batch, 2, 27, H, W) frame patches; got {shape}")
        out = self.perceiver(
            inputs,
            attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        b, _, _, h, w = inputs.shape
        flow = (out.logits / 100.0).reshape(b, h, w, 2)
        loss = None
        if labels is not None:
            check_like("labels (flow)", labels, flow.shape, flow.dtype)
            loss = torch.linalg.vector_norm(flow - labels, dim=-1).mean()  # end-point error
        return _finish(PerceiverClassifierOutput, loss, flow, out, return_dict, self.config)


class PerceiverForMultimodalAutoencoding(PerceiverPreTrainedModel):
    """Video (B, T, 3, H, W) + audio (B, S, 1) + label (B, K) → reconstructions and class logits.

    The label input is always replaced by a learned mask token, so ``logits["label"]`` classifies the clip. Decode
    in chunks with ``subsampled_output_points={"image": idx, "audio": idx}`` (flat indices into the T×H×W pixel
    grid and the audio-patch axis). Frame count, frame size and audio length all follow the config.
    """

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__(config)
        n_audio = config.num_frames * config.audio_samples_per_frame
        spp = config.samples_per_patch
        if n_audio % spp:
            raise ValueError(f"{n_audio} audio samples per clip are not a multiple of samples_per_patch={spp}")
        video_grid = (config.num_frames, config.image_size, config.image_size)

        def audio_pos() -> FourierPositionEncoding:
            return FourierPositionEncoding(192, (n_audio,))

        def video_pos() -> FourierPositionEncoding:
            return FourierPositionEncoding(32, video_grid)

        preprocessor = MultimodalPreprocessor(
            {
                "audio": AudioPreprocessor(spp, audio_pos()),
                "image": ImagePreprocessor("patches", spatial_downsample=4, position=video_pos()),
                "label": OneHotPreprocessor(config.num_labels),
            },
            mask_probs={"image": 0.0, "audio": 0.0, "label": 1.0},
            min_padding_size=4,
            input_shapes={
                "audio": (n_audio, 1),
                "label": (config.num_labels,),
            },
        )
        queries = MultimodalQueries(
            {
                "audio": FourierQueries((n_audio // spp,), audio_pos()),
                "image": FourierQueries(config.output_shape[1:4], video_pos()),
                "label": TrainableQueries(1, config.label_trainable_num_channels),
            }
        )
        channels = config.output_num_channels
        postprocessor = MultimodalPostprocessor(
            {
                "audio": AudioPostprocessor(channels, spp),
                "image": ProjectionPostprocessor(channels, 3),
                "label": ClassificationPostprocessor(channels, config.num_labels),
            }
        )
        decoder = PerceiverDecoder(config, queries, final_channels=channels)
        self.perceiver = PerceiverModel(config, decoder, preprocessor, postprocessor)
        self.init_weights()

    def forward(
        self,
        inputs: dict[str, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        subsampled_output_points: dict[str, torch.Tensor] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> PerceiverClassifierOutput | tuple:
        """inputs: {"image": (B, T, 3, H, W), "audio": (B, S, 1), "label": (B, K)} → logits dict:
        image (B, N_img, 3), audio (B, N_audio·samples_per_patch), label (B, K)."""
        if labels is not None:
            raise ValueError("the multimodal model takes no `labels`; train it with perceiver_io.training")
        out = self.perceiver(
            inputs,
            attention_mask,
            subsampled_output_points,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        return _finish(PerceiverClassifierOutput, None, out.logits, out, return_dict, self.config)
