"""One configuration object for every Perceiver IO model.

The keywords, defaults, attributes and ``config.json`` layout are those of transformers' ``PerceiverConfig`` (and of
the ``PretrainedConfig`` it inherits), so a config written by either library loads in the other and a transformers
user's keyword arguments work unchanged. A few fields of our own select the numerics of DeepMind's original code
where it differs from transformers' port (see the class docstring); they default to transformers' behaviour.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import math
import os
import warnings
from collections.abc import Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

# transformers' names for the activation functions we support, mapped to torch's GELU `approximate` argument.
# transformers' attention backends a Perceiver config may name (its others need kernels Perceiver lacks there too).
ATTN_IMPLEMENTATIONS = (None, "eager", "sdpa")
GELU_VARIANTS = {"gelu": "none", "gelu_pytorch_tanh": "tanh", "gelu_new": "tanh", "gelu_fast": "tanh"}
STEM_PADDINGS = ("transformers", "tf_same")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
# Counts and widths: integers >= 1. Above 2**31 - 1 a value is a typo, not a model: no tensor dimension or layer
# count of a Perceiver comes near it, and a shape that large would be refused only after terabytes were requested.
POSITIVE_INTS = (
    "num_latents",
    "d_latents",
    "d_model",
    "num_blocks",
    "num_self_attends_per_block",
    "num_self_attention_heads",
    "num_cross_attention_heads",
    "self_attention_widening_factor",
    "cross_attention_widening_factor",
    "vocab_size",
    "max_position_embeddings",
    "image_size",
    "num_frames",
    "audio_samples_per_frame",
    "samples_per_patch",
    "output_num_channels",
    "label_trainable_num_channels",
)
MAX_INT = 2**31 - 1
BOOLS = (
    "use_query_residual",
    "mask_decoder_queries",
    "wipe_fully_masked_rows",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "is_encoder_decoder",
)

# Keywords every transformers config accepts (PretrainedConfig's, current and past, and the generation settings
# older versions wrote into config.json). None changes a Perceiver's computation in transformers either; they are
# stored as attributes and written back, so a round trip through our config loses nothing.
COMMON_KEYS = frozenset(
    {
        "add_cross_attention",
        "bad_words_ids",
        "begin_suppress_tokens",
        "bos_token_id",
        "cross_attention_hidden_size",
        "decoder_start_token_id",
        "diversity_penalty",
        "do_sample",
        "early_stopping",
        "encoder_no_repeat_ngram_size",
        "eos_token_id",
        "exponential_decay_length_penalty",
        "finetuning_task",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "is_decoder",
        "length_penalty",
        "max_length",
        "min_length",
        "no_repeat_ngram_size",
        "num_beam_groups",
        "num_beams",
        "num_return_sequences",
        "output_scores",
        "pad_token_id",
        "prefix",
        "pruned_heads",
        "remove_invalid_values",
        "repetition_penalty",
        "return_dict_in_generate",
        "sep_token_id",
        "suppress_tokens",
        "task_specific_params",
        "temperature",
        "tf_legacy_loss",
        "tie_encoder_decoder",
        "tie_word_embeddings",
        "tokenizer_class",
        "top_k",
        "top_p",
        "torchscript",
        "transformers_version",
        "typical_p",
        "use_bfloat16",
        "use_cache",
        "_commit_hash",
    }
)


class PerceiverConfig:
    """Architecture of a Perceiver IO model, with transformers' keywords, attributes and ``config.json`` keys.

    Encoder: ``num_latents`` × ``d_latents`` latents cross-attend once to inputs of width ``d_model`` (or of the
    preprocessor's width), then ``num_self_attends_per_block`` self-attention layers are applied ``num_blocks``
    times with shared weights.

    Labels: ``id2label`` (int keys) and ``label2id`` are each derived from the other, and ``num_labels`` from them;
    setting ``num_labels`` to a new count gives the labels ``LABEL_0 … LABEL_{n-1}``. ``problem_type`` selects the
    classification loss (``None`` infers it as transformers does).

    transformers' common keywords (``pad_token_id``, ``tie_word_embeddings``, ``tokenizer_class``,
    ``chunk_size_feed_forward``, ``is_encoder_decoder``… see ``COMMON_KEYS``) are stored and written back; they do
    not change a Perceiver's output (``chunk_size_feed_forward`` only splits transformers' MLP into chunks with the
    same result). Any other keyword is stored as an attribute too, with a warning naming it.

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

    model_type = "perceiver"
    # transformers' class attributes of a config without sub-configs or tensor/pipeline-parallel plans.
    sub_configs: ClassVar[dict[str, type]] = {}
    base_model_tp_plan: ClassVar[dict[str, Any] | None] = None
    base_model_pp_plan: ClassVar[dict[str, Any] | None] = None

    def __init__(
        self,
        *,
        num_latents: int = 256,
        d_latents: int = 1280,
        d_model: int = 768,
        num_blocks: int = 1,
        num_self_attends_per_block: int = 26,
        num_self_attention_heads: int = 8,
        num_cross_attention_heads: int = 8,
        qk_channels: int | None = None,
        v_channels: int | None = None,
        cross_attention_shape_for_attention: str = "kv",
        self_attention_widening_factor: int = 1,
        cross_attention_widening_factor: int = 1,
        hidden_act: str = "gelu",
        attention_probs_dropout_prob: float = 0.1,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        use_query_residual: bool = True,
        vocab_size: int = 262,
        max_position_embeddings: int = 2048,
        image_size: int = 56,
        train_size: tuple[int, int] | list[int] = (368, 496),
        num_frames: int = 16,
        audio_samples_per_frame: int = 1920,
        samples_per_patch: int = 16,
        output_shape: tuple[int, int, int, int] | list[int] = (1, 16, 224, 224),
        output_num_channels: int = 512,
        label_trainable_num_channels: int = 1024,
        conv_stem_padding: str = "transformers",
        mask_decoder_queries: bool = False,
        wipe_fully_masked_rows: bool = False,
        decoder_query_residual: bool | None = None,
        architectures: list[str] | None = None,
        id2label: dict[int, str] | None = None,
        label2id: dict[str, int] | None = None,
        num_labels: int | None = None,
        problem_type: str | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        dtype: torch.dtype | str | None = None,
        chunk_size_feed_forward: int = 0,
        is_encoder_decoder: bool = False,
        name_or_path: str = "",
        attn_implementation: str | None = None,
        **kwargs: Any,
    ) -> None:
        # transformers' spellings of three of the keywords above.
        label_trainable_num_channels = _alias(
            kwargs, "_label_trainable_num_channels", "label_trainable_num_channels", label_trainable_num_channels, 1024
        )
        dtype = _alias(kwargs, "torch_dtype", "dtype", dtype, None)
        name_or_path = _alias(kwargs, "_name_or_path", "name_or_path", name_or_path, "")
        attn_implementation = _alias(kwargs, "_attn_implementation", "attn_implementation", attn_implementation, None)
        model_type = kwargs.pop("model_type", self.model_type)
        if model_type != self.model_type:
            raise ValueError(f"config has model_type={model_type!r}; expected {self.model_type!r}")

        self.num_latents = num_latents
        self.d_latents = d_latents
        self.d_model = d_model
        self.num_blocks = num_blocks
        self.num_self_attends_per_block = num_self_attends_per_block
        self.num_self_attention_heads = num_self_attention_heads
        self.num_cross_attention_heads = num_cross_attention_heads
        self.qk_channels = qk_channels
        self.v_channels = v_channels
        self.cross_attention_shape_for_attention = cross_attention_shape_for_attention
        self.self_attention_widening_factor = self_attention_widening_factor
        self.cross_attention_widening_factor = cross_attention_widening_factor
        self.hidden_act = hidden_act
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.use_query_residual = use_query_residual
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.image_size = image_size
        self.train_size = _as_tuple("train_size", train_size)
        self.num_frames = num_frames
        self.audio_samples_per_frame = audio_samples_per_frame
        self.samples_per_patch = samples_per_patch
        self.output_shape = _as_tuple("output_shape", output_shape)
        self.output_num_channels = output_num_channels
        self.label_trainable_num_channels = label_trainable_num_channels
        self.conv_stem_padding = conv_stem_padding
        self.mask_decoder_queries = mask_decoder_queries
        self.wipe_fully_masked_rows = wipe_fully_masked_rows
        self.decoder_query_residual = decoder_query_residual
        self.architectures = None if architectures is None else list(architectures)
        self.output_attentions = output_attentions
        self.output_hidden_states = output_hidden_states
        self.return_dict = return_dict
        self.dtype = dtype
        self.chunk_size_feed_forward = chunk_size_feed_forward
        self.is_encoder_decoder = is_encoder_decoder
        self.name_or_path = name_or_path
        self._attn_implementation = attn_implementation
        self._set_labels(id2label, label2id, num_labels)
        self.problem_type = problem_type

        # Keys beyond the signature: transformers stores every one as an attribute; so do we, and say so for any
        # key no transformers version defines (most often a typo).
        self._other_keys: list[str] = []
        unknown = []
        for key, value in kwargs.items():
            if hasattr(type(self), key) or key in self.__dict__:
                raise ValueError(f"config key {key!r} would replace PerceiverConfig.{key}; rename it")
            setattr(self, key, copy.deepcopy(value))
            self._other_keys.append(key)
            if key not in COMMON_KEYS:
                unknown.append(key)
        if unknown:
            warnings.warn(
                f"PerceiverConfig does not know the key(s) {unknown}: stored as attributes and saved, but no model "
                "reads them",
                UserWarning,
                stacklevel=2,
            )
        self.validate()

    # ---- labels, problem type, dtype: transformers' derived attributes ----

    def _set_labels(
        self, id2label: dict[int, str] | None, label2id: dict[str, int] | None, num_labels: int | None
    ) -> None:
        if id2label is None and label2id is None:
            self.num_labels = 2 if num_labels is None else num_labels
            return
        if id2label is not None:
            self.id2label = id2label
            if label2id is not None:
                if not isinstance(label2id, Mapping):
                    raise TypeError(f"label2id must be a dict {{name: index}}; got {type(label2id).__name__}")
                if set(label2id) != set(self.id2label.values()):
                    raise ValueError(
                        f"label2id names {sorted(label2id)[:5]}… but id2label names "
                        f"{sorted(set(self.id2label.values()))[:5]}…: they must name the same labels"
                    )
                # Kept as given (values validated, stored as transformers stores them): with duplicate label names
                # (ImageNet has two "crane"s) it is no exact inverse.
                for v in label2id.values():
                    _label_index(v)
                self._label2id = dict(label2id)
        else:
            self.label2id = label2id
        if num_labels is not None and num_labels != self.num_labels:
            raise ValueError(f"num_labels={num_labels} contradicts the {self.num_labels} labels of id2label/label2id")

    @property
    def id2label(self) -> dict[int, str]:
        """{class index: label name}; setting it also sets ``label2id``."""
        return self._id2label

    @id2label.setter
    def id2label(self, value: dict[int | str, str]) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(f"id2label must be a dict {{index: name}}; got {type(value).__name__}")
        _check_label_names("id2label", value.values())
        if not value:
            raise ValueError("id2label={} names no label; a model has at least one")
        self._id2label = {_label_index(k): v for k, v in value.items()}
        self._label2id = {v: k for k, v in self._id2label.items()}

    @property
    def label2id(self) -> dict[str, int]:
        """{label name: class index}; setting it also sets ``id2label``."""
        return self._label2id

    @label2id.setter
    def label2id(self, value: dict[str, int | str]) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(f"label2id must be a dict {{name: index}}; got {type(value).__name__}")
        if not value:
            raise ValueError("label2id={} names no label; a model has at least one")
        self._label2id = {k: _label_index(v) for k, v in value.items()}
        self._id2label = {v: k for k, v in self._label2id.items()}

    @property
    def num_labels(self) -> int:
        return len(self._id2label)

    @num_labels.setter
    def num_labels(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"num_labels={n!r} must be an integer >= 1")
        if getattr(self, "_id2label", None) is None or n != self.num_labels:
            self.id2label = {i: f"LABEL_{i}" for i in range(n)}

    @property
    def problem_type(self) -> str | None:
        return self._problem_type

    @problem_type.setter
    def problem_type(self, value: str | None) -> None:
        if value is not None and value not in PROBLEM_TYPES:
            raise ValueError(f"problem_type={value!r}; expected None or one of {PROBLEM_TYPES}")
        if value == "single_label_classification" and self.num_labels == 1:
            raise ValueError("problem_type='single_label_classification' needs num_labels >= 2 (or 'regression')")
        self._problem_type = value

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype of the weights (saved as its name, e.g. ``"float32"``); ``None`` when unknown."""
        return self._dtype

    @dtype.setter
    def dtype(self, value: torch.dtype | str | None) -> None:
        self._dtype = None if value is None else to_torch_dtype(value, "dtype")

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """transformers' former name of ``dtype``."""
        return self._dtype

    @torch_dtype.setter
    def torch_dtype(self, value: torch.dtype | str | None) -> None:
        self.dtype = value

    @property
    def use_return_dict(self) -> bool:
        """Whether models return output objects (transformers' name, read by its model code)."""
        return self.return_dict

    @property
    def name_or_path(self) -> str:
        """The folder or hub id this config was loaded from (``""`` if built in code)."""
        return self._name_or_path

    @name_or_path.setter
    def name_or_path(self, value: str | os.PathLike) -> None:
        self._name_or_path = str(value)

    @property
    def _attn_implementation(self) -> str | None:
        """transformers' attention-backend setting: None, "eager" or "sdpa". Recorded and accepted for its code;
        perceiver_io chooses its attention kernel per shape, and every kernel computes the same attention
        (within fp32 rounding; a call asking for attention weights computes them explicitly)."""
        return self._attn_implementation_internal

    @_attn_implementation.setter
    def _attn_implementation(self, value: str | None) -> None:
        if value not in ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation={value!r} is not supported; expected one of {list(ATTN_IMPLEMENTATIONS)}"
            )
        self._attn_implementation_internal = value

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> PerceiverConfig:
        """The config itself: a Perceiver has no sub-configs (transformers' method for composite models)."""
        return self

    def __iter__(self) -> Iterator[str]:
        """The attribute names, as transformers' configs iterate."""
        yield from list(vars(self))

    @property
    def gelu_approximate(self) -> str:
        return GELU_VARIANTS[self.hidden_act]

    def validate(self) -> None:
        """Raise ValueError (a bad value) or TypeError (a value of the wrong type) naming the first bad field."""
        for name in POSITIVE_INTS:
            _check_int(name, getattr(self, name), 1)
        for name in ("qk_channels", "v_channels"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        _check_int("chunk_size_feed_forward", self.chunk_size_feed_forward, 0)
        for name in BOOLS:
            _check_bool(name, getattr(self, name))
        if self.decoder_query_residual is not None:
            _check_bool("decoder_query_residual", self.decoder_query_residual)
        _check_float("attention_probs_dropout_prob", self.attention_probs_dropout_prob, 0.0, 1.0)
        _check_float("initializer_range", self.initializer_range, 0.0, math.inf)
        _check_float("layer_norm_eps", self.layer_norm_eps, 0.0, math.inf)
        for name, options in (
            ("hidden_act", list(GELU_VARIANTS)),
            ("conv_stem_padding", list(STEM_PADDINGS)),
            ("cross_attention_shape_for_attention", ["q", "kv"]),
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in options:
                raise ValueError(f"{name}={value!r} is not supported; expected one of {options}")
        for name in ("num_self_attention_heads", "num_cross_attention_heads"):
            heads = getattr(self, name)
            if self.d_latents % heads:
                raise ValueError(f"d_latents={self.d_latents} is not divisible by {name}={heads}")
        for name, value in (("qk_channels", self.qk_channels), ("v_channels", self.v_channels)):
            for heads_name in ("num_self_attention_heads", "num_cross_attention_heads"):
                heads = getattr(self, heads_name)
                if value is not None and value % heads:
                    raise ValueError(f"{name}={value} is not divisible by {heads_name}={heads}")
        for name, value, dims in (
            ("train_size", self.train_size, "(height, width)"),
            ("output_shape", self.output_shape, "(batch, frames, height, width)"),
        ):
            if len(value) != dims.count(",") + 1:
                raise ValueError(f"{name}={list(value)} must be {dims}")
            for v in value:
                _check_int(name, v, 1)

    def with_deepmind_numerics(self) -> PerceiverConfig:
        """A copy that computes what DeepMind's JAX code computes (tanh GELU, TF-SAME stem, masked queries)."""
        cfg = copy.deepcopy(self)
        cfg.hidden_act = "gelu_pytorch_tanh"
        cfg.conv_stem_padding = "tf_same"
        cfg.mask_decoder_queries = True
        cfg.wipe_fully_masked_rows = True
        return cfg

    @classmethod
    def released(cls, name: str, **overrides: Any) -> PerceiverConfig:
        """The configuration of one of DeepMind's six released models, e.g. ``"vision-perceiver-fourier"``.

        ``overrides`` change fields; widths that the released model ties to an overridden field follow it (see
        ``perceiver_io.released.released_config``), so ``released("language-perceiver", d_latents=64)`` builds.
        """
        from perceiver_io.released import released_config

        return released_config(name, **overrides)

    # ---- serialisation (transformers' config.json) ----

    def to_dict(self) -> dict[str, Any]:
        """Every key, as transformers' ``to_dict`` spells it (``id2label`` keys are ints until written as JSON)."""
        out: dict[str, Any] = {}
        for name in _signature_defaults():
            if name == "attn_implementation":  # a run-time choice; transformers does not save it either
                continue
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else copy.deepcopy(value)
        out["_label_trainable_num_channels"] = out.pop("label_trainable_num_channels")
        out["_name_or_path"] = out.pop("name_or_path")
        out.pop("num_labels")  # derived from id2label, as in transformers
        out["id2label"] = dict(self.id2label)
        out["label2id"] = dict(self.label2id)
        out["dtype"] = None if self.dtype is None else str(self.dtype).removeprefix("torch.")
        # Keys beyond the signature: those given to the constructor, then any public attribute set since (as
        # transformers, which writes its whole __dict__).
        fields = _signature_defaults()
        later = [k for k in vars(self) if not k.startswith("_") and k not in fields and k not in self._other_keys]
        for key in self._other_keys + later:
            out[key] = copy.deepcopy(getattr(self, key))
        out["model_type"] = self.model_type
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        """The keys whose values differ from ``PerceiverConfig()`` (plus ``model_type``), as transformers writes."""
        with warnings.catch_warnings():
            default = type(self)().to_dict()
        out = {k: v for k, v in self.to_dict().items() if k not in default or v != default[k]}
        out.pop("_name_or_path", None)
        out["model_type"] = self.model_type
        return out

    def to_json_string(self, use_diff: bool = True) -> str:
        """JSON text of ``to_diff_dict()`` (``use_diff=True``, transformers' default) or of ``to_dict()``."""
        return json.dumps(self.to_diff_dict() if use_diff else self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        """Write ``to_json_string(use_diff)`` to ``json_file_path`` (atomically)."""
        from perceiver_io.checkpoints.files import atomic_open

        with atomic_open(json_file_path, "w", encoding="utf-8") as fh:
            fh.write(self.to_json_string(use_diff=use_diff))

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write the complete config (not a diff: readable without our defaults) to ``save_directory/config.json``."""
        directory = Path(save_directory)
        if directory.is_file():
            raise ValueError(f"{directory} is a file; save_pretrained needs a folder")
        directory.mkdir(parents=True, exist_ok=True)
        self.to_json_file(directory / "config.json", use_diff=False)

    save = save_pretrained

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string(use_diff=True)}"

    @classmethod
    def from_dict(
        cls, config_dict: dict[str, Any], *, return_unused_kwargs: bool = False, **kwargs: Any
    ) -> PerceiverConfig | tuple[PerceiverConfig, dict[str, Any]]:
        """A config from ``config_dict`` (``to_dict``'s or a config.json's keys), with ``kwargs`` overriding it.

        An override that is no config key raises TypeError, or with ``return_unused_kwargs=True`` is returned:
        ``(config, {key: value})`` (transformers' convention, for callers that pass the rest on).
        """
        return cls._from_dict(config_dict, None, return_unused_kwargs, kwargs)

    @classmethod
    def _from_dict(
        cls, config_dict: dict[str, Any], source: Path | None, return_unused_kwargs: bool, kwargs: dict[str, Any]
    ) -> PerceiverConfig | tuple[PerceiverConfig, dict[str, Any]]:
        """``from_dict``; a bad stored value raises naming ``source`` (the config.json it was read from)."""
        data = dict(config_dict)
        used, unused = {}, {}
        for key, value in kwargs.items():
            if key in data or cls.is_config_key(key):
                used[key] = value
            else:
                unused[key] = value
        if used.get("dtype", used.get("torch_dtype")) == "auto":  # "auto" means the stored dtype
            used.pop("dtype", None)
            used.pop("torch_dtype", None)
        # A new label set replaces the stored one whole.
        if "num_labels" in used and not {"id2label", "label2id"} & set(used):
            data.pop("id2label", None)
            data.pop("label2id", None)
        if "id2label" in used and "label2id" not in used:
            data.pop("label2id", None)
        if "label2id" in used and "id2label" not in used:
            data.pop("id2label", None)
        try:
            config = cls(**{**data, **used})
        except (ValueError, TypeError) as err:
            if source is None:
                raise
            where = f"{source} with overrides {sorted(used)}" if used else str(source)
            raise (TypeError if isinstance(err, TypeError) else ValueError)(f"{where}: {err}") from None
        if return_unused_kwargs:
            return config, unused
        if unused:
            raise TypeError(f"{sorted(unused)} are not PerceiverConfig keys")
        return config

    @classmethod
    def is_config_key(cls, key: str) -> bool:
        """Whether ``key`` is a keyword of this config (one of ours, or one of transformers' common ones)."""
        aliases = {"_label_trainable_num_channels", "torch_dtype", "_name_or_path", "model_type"}
        return key in _signature_defaults() or key in COMMON_KEYS or key in aliases

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> PerceiverConfig:
        """A config from a JSON file of its keys."""
        return cls._from_dict(read_config_dict(json_file), Path(json_file), False, {})

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        revision: str | None = None,
        subfolder: str = "",
        return_unused_kwargs: bool = False,
        **kwargs: Any,
    ) -> PerceiverConfig | tuple[PerceiverConfig, dict[str, Any]]:
        """The config of a model folder, a ``config.json`` file or a hub id (``owner/name``, through
        ``huggingface_hub``'s cache; offline with ``HF_HUB_OFFLINE=1`` once cached).

        ``kwargs`` override stored keys (e.g. ``num_labels=3``); for the rest see ``from_dict``. The hub keywords
        (``cache_dir``, ``force_download``, ``local_files_only``, ``token``, ``revision``) are those of
        ``huggingface_hub.snapshot_download``; ``subfolder`` is a folder inside the model folder or repository.
        """
        from perceiver_io.checkpoints.hub import HubOptions, resolve_source

        source = Path(pretrained_model_name_or_path)
        hub = HubOptions(cache_dir, force_download, local_files_only, token, revision, subfolder)
        if source.is_file():
            hub.check_local(source)
            json_file = source
        else:
            json_file = resolve_source(pretrained_model_name_or_path, hub, ["config.json"]) / "config.json"
        return cls._from_dict(read_config_dict(json_file), json_file, return_unused_kwargs, kwargs)

    @classmethod
    def load(cls, directory: str | os.PathLike, **overrides: Any) -> PerceiverConfig:
        """The config in a local model folder (``from_pretrained`` without the hub)."""
        json_file = Path(directory) / "config.json"
        return cls._from_dict(read_config_dict(json_file), json_file, False, overrides)


def read_config_dict(json_file: str | os.PathLike) -> dict[str, Any]:
    """The keys of a config.json, with a clear error for a missing or malformed file."""
    path = Path(json_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: a model folder needs a config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}; expected an object of config keys")
    return data


def to_torch_dtype(value: torch.dtype | str, name: str) -> torch.dtype:
    """A floating torch dtype from itself or its name (``"bfloat16"``, ``"torch.float16"``)."""
    dtype = getattr(torch, value.removeprefix("torch."), None) if isinstance(value, str) else value
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{name}={value!r} is not a floating torch dtype (e.g. torch.float32 or 'bfloat16')")
    return dtype


def _alias(kwargs: dict[str, Any], alias: str, name: str, value: Any, default: Any) -> Any:
    """``value`` of keyword ``name``, or of its transformers spelling ``alias`` (popped from ``kwargs``)."""
    if alias not in kwargs:
        return value
    other = kwargs.pop(alias)
    if value != default and other != value:
        raise ValueError(f"{name}={value!r} and {alias}={other!r} disagree; pass one of them")
    return other if value == default else value


@functools.cache
def _signature_defaults() -> dict[str, Any]:
    """{keyword: default} of ``PerceiverConfig.__init__`` (the named keywords, in order)."""
    params = inspect.signature(PerceiverConfig.__init__).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _check_int(name: str, value: Any, low: int) -> None:
    """``value`` is an int in [low, MAX_INT]; a bool is no int here (``True`` is a typo for a count)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={value!r} must be an integer; got {type(value).__name__}")
    if not low <= value <= MAX_INT:
        raise ValueError(f"{name}={value} must be an integer in [{low}, {MAX_INT}]")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}={value!r} must be True or False; got {type(value).__name__}")


def _check_float(name: str, value: Any, low: float, high: float) -> None:
    """``value`` is a finite real number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}={value!r} must be a number; got {type(value).__name__}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name}={value!r} must be a finite number in [{low}, {high}]")


def _as_tuple(name: str, value: Any) -> tuple:
    """A list or tuple field (config.json stores tuples as lists) as a tuple; its items are checked in validate."""
    if not isinstance(value, list | tuple):
        raise TypeError(f"{name}={value!r} must be a list or tuple; got {type(value).__name__}")
    return tuple(value)


def _check_label_names(field: str, names: Iterable[Any]) -> None:
    for name in names:
        if not isinstance(name, Hashable):
            raise TypeError(f"{field} label name {name!r} must be a string; got {type(name).__name__}")


def _label_index(key: Any) -> int:
    """A class index of id2label: an int, or its decimal string (JSON object keys are strings)."""
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, int) or key < 0:
        raise ValueError(f"id2label key {key!r} is not a class index (an integer >= 0)")
    return key
