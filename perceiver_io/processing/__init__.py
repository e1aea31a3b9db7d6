"""Input processors for Perceiver IO: a byte tokenizer and image processors, equal to transformers'."""

from .feature_extractor import PerceiverFeatureExtractor
from .image_processor import BatchFeature, PerceiverImageProcessor
from .image_processor_fast import PerceiverImageProcessorFast
from .tokenizer import AddedToken, BatchEncoding, PerceiverTokenizer

__all__ = [
    "AddedToken",
    "BatchEncoding",
    "BatchFeature",
    "PerceiverFeatureExtractor",
    "PerceiverImageProcessor",
    "PerceiverImageProcessorFast",
    "PerceiverTokenizer",
]
