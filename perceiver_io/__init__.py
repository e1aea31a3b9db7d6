"""Perceiver IO in PyTorch: DeepMind's architecture, transformers' interface."""

from perceiver_io.components import (
    PerceiverAudioPostprocessor,
    PerceiverAudioPreprocessor,
    PerceiverBasicDecoder,
    PerceiverBasicVideoAutoencodingDecoder,
    PerceiverClassificationDecoder,
    PerceiverClassificationPostprocessor,
    PerceiverEmbeddingDecoder,
    PerceiverImagePreprocessor,
    PerceiverMultimodalDecoder,
    PerceiverMultimodalPostprocessor,
    PerceiverMultimodalPreprocessor,
    PerceiverOneHotPreprocessor,
    PerceiverOpticalFlowDecoder,
    PerceiverProjectionDecoder,
    PerceiverProjectionPostprocessor,
    PerceiverTextPreprocessor,
)
from perceiver_io.config import PerceiverConfig
from perceiver_io.heads import (
    PerceiverForImageClassificationConvProcessing,
    PerceiverForImageClassificationFourier,
    PerceiverForImageClassificationLearned,
    PerceiverForMaskedLM,
    PerceiverForMultimodalAutoencoding,
    PerceiverForOpticalFlow,
    PerceiverForSequenceClassification,
)
from perceiver_io.model import PerceiverModel, PerceiverPreTrainedModel
from perceiver_io.outputs import (
    ModelOutput,
    PerceiverClassifierOutput,
    PerceiverDecoderOutput,
    PerceiverMaskedLMOutput,
    PerceiverModelOutput,
)
from perceiver_io.processing import (
    PerceiverFeatureExtractor,
    PerceiverImageProcessor,
    PerceiverImageProcessorFast,
    PerceiverTokenizer,
)

__all__ = [
    "ModelOutput",
    "PerceiverClassifierOutput",
    "PerceiverConfig",
    "PerceiverDecoderOutput",
    "PerceiverFeatureExtractor",
    "PerceiverForImageClassificationConvProcessing",
    "PerceiverForImageClassificationFourier",
    "PerceiverForImageClassificationLearned",
    "PerceiverForMaskedLM",
    "PerceiverForMultimodalAutoencoding",
    "PerceiverForOpticalFlow",
    "PerceiverForSequenceClassification",
    "PerceiverImageProcessor",
    "PerceiverImageProcessorFast",
    "PerceiverMaskedLMOutput",
    "PerceiverModel",
    "PerceiverModelOutput",
    "PerceiverPreTrainedModel",
    "PerceiverTokenizer",
]

# Building blocks for custom models (transformers' modeling_perceiver names).
__all__ += [
    "PerceiverAudioPostprocessor",
    "PerceiverAudioPreprocessor",
    "PerceiverBasicDecoder",
    "PerceiverBasicVideoAutoencodingDecoder",
    "PerceiverClassificationDecoder",
    "PerceiverClassificationPostprocessor",
    "PerceiverEmbeddingDecoder",
    "PerceiverImagePreprocessor",
    "PerceiverMultimodalDecoder",
    "PerceiverMultimodalPostprocessor",
    "PerceiverMultimodalPreprocessor",
    "PerceiverOneHotPreprocessor",
    "PerceiverOpticalFlowDecoder",
    "PerceiverProjectionDecoder",
    "PerceiverProjectionPostprocessor",
    "PerceiverTextPreprocessor",
]
