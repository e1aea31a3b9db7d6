"""Perceiver IO in PyTorch: DeepMind's architecture, transformers' interface."""

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
from perceiver_io.model import PerceiverModel, PerceiverOutput, PerceiverPreTrainedModel
from perceiver_io.processing import PerceiverImageProcessor, PerceiverTokenizer

__all__ = [
    "PerceiverConfig",
    "PerceiverForImageClassificationConvProcessing",
    "PerceiverForImageClassificationFourier",
    "PerceiverForImageClassificationLearned",
    "PerceiverForMaskedLM",
    "PerceiverForMultimodalAutoencoding",
    "PerceiverForOpticalFlow",
    "PerceiverForSequenceClassification",
    "PerceiverImageProcessor",
    "PerceiverModel",
    "PerceiverOutput",
    "PerceiverPreTrainedModel",
    "PerceiverTokenizer",
]
