"""DeepMind's four Perceiver IO colabs as functions, for notebooks and the ``perceiver`` command.

- `fill_mask(model, text, spans)`: masked byte prediction;
- `classify(model, images, top_k)`: ImageNet classification with the colab's preprocessing;
- `optical_flow(model, frame1, frame2)`: flow in pixels for frames of any size (tiled);
- `autoencode(model, video, audio, chunks)`: video + audio reconstruction and classification.

The functions share the names of their modules (``perceiver_io.tasks.optical_flow`` is the function); import
helpers from the modules with ``from perceiver_io.tasks.optical_flow import predict_tile``.
"""

from perceiver_io.tasks.autoencode import AutoencodeResult, autoencode
from perceiver_io.tasks.classify import classify
from perceiver_io.tasks.fill_mask import FillMaskResult, fill_mask
from perceiver_io.tasks.optical_flow import optical_flow

__all__ = ["AutoencodeResult", "FillMaskResult", "autoencode", "classify", "fill_mask", "optical_flow"]
