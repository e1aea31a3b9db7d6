"""Input processors for Perceiver IO: a byte tokenizer and an image processor, equal to transformers'."""

from .image_processor import BatchFeature, PerceiverImageProcessor
from .tokenizer import BatchEncoding, PerceiverTokenizer

__all__ = ["BatchEncoding", "BatchFeature", "PerceiverImageProcessor", "PerceiverTokenizer"]
