"""transformers' Perceiver building blocks under its names and constructor arguments, for custom models:

    PerceiverModel(config, input_preprocessor=PerceiverTextPreprocessor(config),
                   decoder=PerceiverClassificationDecoder(config, num_channels=config.d_latents, ...))

Each is a thin translation onto our adapters (``perceiver_io.adapters``), query providers (``perceiver_io.queries``)
and decoder (``perceiver_io.decoders``): preprocessors, decoders and postprocessors, one module each.
"""

from perceiver_io.components.decoders import (
    PerceiverBasicDecoder,
    PerceiverBasicVideoAutoencodingDecoder,
    PerceiverClassificationDecoder,
    PerceiverEmbeddingDecoder,
    PerceiverMultimodalDecoder,
    PerceiverOpticalFlowDecoder,
    PerceiverProjectionDecoder,
)
from perceiver_io.components.postprocessors import (
    PerceiverAudioPostprocessor,
    PerceiverClassificationPostprocessor,
    PerceiverMultimodalPostprocessor,
    PerceiverProjectionPostprocessor,
)
from perceiver_io.components.preprocessors import (
    PerceiverAudioPreprocessor,
    PerceiverImagePreprocessor,
    PerceiverMultimodalPreprocessor,
    PerceiverOneHotPreprocessor,
    PerceiverTextPreprocessor,
)

__all__ = [
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
