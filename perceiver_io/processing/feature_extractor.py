"""``PerceiverFeatureExtractor``: the deprecated name of ``PerceiverImageProcessor``.

transformers 4 kept this alias (with a ``FutureWarning``) for code written before image processors existed;
transformers 5 removed it. It is kept here so such code still runs, and it warns the same way.
"""

from __future__ import annotations

import warnings
from typing import Any

from .image_processor import PerceiverImageProcessor


class PerceiverFeatureExtractor(PerceiverImageProcessor):
    """Deprecated alias of ``PerceiverImageProcessor``: same arguments and output; warns on construction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn(
            "PerceiverFeatureExtractor is deprecated (transformers 5 removed it); use PerceiverImageProcessor instead",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)
