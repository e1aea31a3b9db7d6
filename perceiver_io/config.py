"""One configuration object for every Perceiver IO model.

The field names and defaults are those of transformers' ``PerceiverConfig`` so that a ``config.json`` written by
either library loads in the other. A few fields of our own select the numerics of DeepMind's original code where it
differs from transformers' port (see ``deepmind_numerics``); they default to transformers' behaviour.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field, fields
from typing import Any

# transformers' names for the activation functions we support, mapped to torch's GELU `approximate` argument.
GELU_VARIANTS = {"gelu": "none", "gelu_pytorch_tanh": "tanh", "gelu_new": "tanh", "gelu_fast": "tanh"}
STEM_PADDINGS = ("transformers", "tf_same")

# Keys of transformers' PretrainedConfig that carry no architecture: kept only so that a round trip loses nothing.
_HF_BOOKKEEPING = {
    "architectures",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
}


@dataclass
class PerceiverConfig:
    """Architecture of a Perceiver IO model (transformers-compatible field names).

    Encoder: ``num_latents`` × ``d_latents`` latents cross-attend once to inputs of width ``d_model`` (or of the
    preprocessor's width), then ``num_self_attends_per_block`` self-attention layers are applied ``num_blocks``
    times with shared weights.

    Numerics switches (ours; transformers' behaviour by default):
      hidden_act: ``"gelu"`` (exact erf, transformers) or ``"gelu_pytorch_tanh"`` (tanh approximation, DeepMind).
      conv_stem_padding: ``"transformers"`` (symmetric 3-pixel pad, no pool padding: 224 → 55×55) or ``"tf_same"``
        (TensorFlow "SAME" asymmetric padding in the 7×7 conv and the max-pool: 224 → 56×56, DeepMind).
      mask_decoder_queries: apply the input mask to the decoder's queries too (DeepMind's MLM does; transformers
        never masks decoder queries).
      wipe_fully_masked_rows: set the attention output of a query whose keys are all masked to zero before the
        output projection (DeepMind); transformers attends uniformly instead.
      decoder_query_residual: residual around the classification decoder's cross-attention. ``None`` keeps each
        head's transformers default (True); DeepMind's learned-position ImageNet model uses False.
    LayerNorm eps is 1e-5 in both references (transformers' ``layer_norm_eps`` is never read by its layers), so it
    is not configurable here; ``layer_norm_eps`` is kept only for config round trips.
    """

    num_latents: int = 256
    d_latents: int = 1280
    d_model: int = 768
    num_blocks: int = 1
    num_self_attends_per_block: int = 26
    num_self_attention_heads: int = 8
    num_cross_attention_heads: int = 8
    qk_channels: int | None = None
    v_channels: int | None = None
    cross_attention_shape_for_attention: str = "kv"
    self_attention_widening_factor: int = 1
    cross_attention_widening_factor: int = 1
    hidden_act: str = "gelu"
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    use_query_residual: bool = True
    vocab_size: int = 262
    max_position_embeddings: int = 2048
    image_size: int = 56
    train_size: tuple[int, int] = (368, 496)
    num_frames: int = 16
    audio_samples_per_frame: int = 1920
    samples_per_patch: int = 16
    output_shape: tuple[int, int, int, int] = (1, 16, 224, 224)
    output_num_channels: int = 512
    label_trainable_num_channels: int = 1024
    id2label: dict[int, str] | None = None
    problem_type: str | None = None
    # Output options: the defaults of every forward call (transformers' names).
    output_attentions: bool = False
    output_hidden_states: bool = False
    return_dict: bool = True
    # Numerics switches (ours).
    conv_stem_padding: str = "transformers"
    mask_decoder_queries: bool = False
    wipe_fully_masked_rows: bool = False
    decoder_query_residual: bool | None = None
    # Unknown keys read from a config.json, written back unchanged.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.train_size = tuple(self.train_size)
        self.output_shape = tuple(self.output_shape)
        if self.id2label is None:
            self.id2label = {0: "LABEL_0", 1: "LABEL_1"}
        self.id2label = {int(k): v for k, v in self.id2label.items()}
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        if self.hidden_act not in GELU_VARIANTS:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; expected one of {list(GELU_VARIANTS)}")
        if self.conv_stem_padding not in STEM_PADDINGS:
            raise ValueError(f"conv_stem_padding={self.conv_stem_padding!r}; expected one of {STEM_PADDINGS}")
        if self.cross_attention_shape_for_attention not in ("q", "kv"):
            raise ValueError(
                f"cross_attention_shape_for_attention={self.cross_attention_shape_for_attention!r}; "
                "expected 'q' or 'kv'"
            )
        for name in ("num_self_attention_heads", "num_cross_attention_heads"):
            heads = getattr(self, name)
            if self.d_latents % heads:
                raise ValueError(f"d_latents={self.d_latents} is not divisible by {name}={heads}")
        if len(self.train_size) != 2:
            raise ValueError(f"train_size={self.train_size} must be (height, width)")
        if len(self.output_shape) != 4:
            raise ValueError(f"output_shape={self.output_shape} must be (batch, frames, height, width)")
        positive = ("num_latents", "d_latents", "d_model", "num_blocks", "num_self_attends_per_block")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, n: int) -> None:
        self.id2label = {i: f"LABEL_{i}" for i in range(n)}

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}

    @property
    def gelu_approximate(self) -> str:
        return GELU_VARIANTS[self.hidden_act]

    def with_deepmind_numerics(self) -> PerceiverConfig:
        """A copy that computes what DeepMind's JAX code computes (tanh GELU, TF-SAME stem, masked queries)."""
        cfg = copy.deepcopy(self)
        cfg.hidden_act = "gelu_pytorch_tanh"
        cfg.conv_stem_padding = "tf_same"
        cfg.mask_decoder_queries = True
        cfg.wipe_fully_masked_rows = True
        return cfg

    # ---- serialisation (transformers' config.json) ----

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["_label_trainable_num_channels"] = out.pop("label_trainable_num_channels")
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["label2id"] = self.label2id
        out["model_type"] = "perceiver"
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> PerceiverConfig:
        data = {**data, **overrides}
        if data.get("model_type", "perceiver") != "perceiver":
            raise ValueError(f"config has model_type={data['model_type']!r}; expected 'perceiver'")
        data = dict(data)
        if "_label_trainable_num_channels" in data:
            data["label_trainable_num_channels"] = data.pop("_label_trainable_num_channels")
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        label2id = data.get("label2id")
        if kwargs.get("id2label") is None and "num_labels" in data:
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(int(data["num_labels"]))}
        extra = {k: v for k, v in data.items() if k not in known and k not in {"label2id", "num_labels"}}
        extra = {k: v for k, v in extra.items() if k in _HF_BOOKKEEPING or not k.startswith("_")}
        cfg = cls(**kwargs, extra=extra)
        if label2id is not None and set(label2id) != set(cfg.id2label.values()):
            raise ValueError("config.json: label2id does not match id2label")
        return cfg

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` into ``directory`` (atomically)."""
        path = os.path.join(directory, "config.json")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, directory: str | os.PathLike, **overrides: Any) -> PerceiverConfig:
        path = os.path.join(directory, "config.json")
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} not found: a model folder needs a config.json") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        return cls.from_dict(data, **overrides)

    @classmethod
    def released(cls, name: str) -> PerceiverConfig:
        """The configuration of one of DeepMind's six released models, e.g. ``"vision-perceiver-fourier"``."""
        from perceiver_io.released import released_config

        return released_config(name)
