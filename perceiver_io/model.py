"""PerceiverModel: preprocess → encode into latents → decode queries → postprocess."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from perceiver_io.checks import check_floating, check_model_inputs, parameter_dtype, values_checkable
from perceiver_io.config import PerceiverConfig
from perceiver_io.encoder import PerceiverEncoder
from perceiver_io.layers.position import TrainablePositionEncoding
from perceiver_io.outputs import ModelOutput, PerceiverDecoderOutput, PerceiverModelOutput

# False while a checkpoint loader builds a model whose every weight it then overwrites (see ``no_init_weights``).
_INIT_WEIGHTS = contextvars.ContextVar("perceiver_io_init_weights", default=True)


@contextlib.contextmanager
def no_init_weights() -> Iterator[None]:
    """Models built inside skip ``init_weights`` (seconds for the 200M-parameter language model): for loaders
    that then overwrite every parameter and raise on any they miss."""
    token = _INIT_WEIGHTS.set(False)
    try:
        yield
    finally:
        _INIT_WEIGHTS.reset(token)


class PerceiverPreTrainedModel(nn.Module):
    """Shared by every model: weight init, loading and saving, and the attributes and methods of transformers'
    ``PreTrainedModel`` that its users and its ``Trainer`` call.

    Input embeddings: for text models (and a ``PerceiverModel`` whose preprocessor embeds bytes)
    ``get_input_embeddings`` returns the byte embedding (``nn.Embedding``, vocab_size × d_model). transformers'
    Perceiver returns the latent array instead; the byte table is what its callers (PEFT, embedding resizing,
    input-gradient hooks) expect of a token embedding. Models without a token embedding (images, flow, video)
    return the latent array, as transformers does.
    """

    config_class = PerceiverConfig
    base_model_prefix = "perceiver"
    main_input_name = "inputs"
    supports_gradient_checkpointing = True
    # transformers.Trainer reads these: no tensor parallel split, no key left out of saves.
    is_parallelizable = False
    _keys_to_ignore_on_save = None
    _hf_peft_config_loaded = False

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__()
        if not isinstance(config, PerceiverConfig):
            raise TypeError(f"{type(self).__name__} needs a PerceiverConfig; got {type(config).__name__}")
        self.config = config

    @torch.no_grad()
    def init_weights(self) -> None:
        """DeepMind's initialisation: fan-in truncated-normal linears and convs (Haiku's VarianceScaling(1.0)), zero
        biases, and truncated normals of std ``initializer_range`` for latents, position tables, embeddings, padding
        and mask tokens. Skipped inside ``no_init_weights``."""
        if not _INIT_WEIGHTS.get():
            return
        for module in self.modules():
            self._init_weights(module)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """``init_weights``' rule for one module's own tensors (transformers' name; the loader re-initialises the
        modules of tensors a checkpoint lacks or mis-shapes with it)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear | nn.Conv2d):
            scale = module.weight[0].numel() ** -0.5
            nn.init.trunc_normal_(module.weight, std=scale, a=-2 * scale, b=2 * scale)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        elif isinstance(module, TrainablePositionEncoding):
            nn.init.trunc_normal_(module.embeddings, std=std, a=-2 * std, b=2 * std)
        elif isinstance(module, nn.ParameterDict | PerceiverEncoder):
            for p in module.parameters(recurse=False) if isinstance(module, PerceiverEncoder) else module.values():
                nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)

    # ---- transformers' PreTrainedModel attributes ----

    @property
    def base_model(self) -> nn.Module:
        """The ``PerceiverModel`` inside a head (the model itself for a ``PerceiverModel``)."""
        return getattr(self, self.base_model_prefix, self)

    @property
    def device(self) -> torch.device:
        """The device of the first parameter (models live on one device)."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the first floating parameter."""
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameter count; ``only_trainable`` counts those with ``requires_grad``; ``exclude_embeddings`` leaves
        out ``nn.Embedding`` weights (transformers' definition: latents and position tables still count)."""
        embeddings = {f"{n}.weight" for n, m in self.named_modules() if isinstance(m, nn.Embedding)}
        return sum(
            p.numel()
            for n, p in self.named_parameters()
            if (p.requires_grad or not only_trainable) and not (exclude_embeddings and n in embeddings)
        )

    @classmethod
    def can_generate(cls) -> bool:
        """Perceiver models do not generate (no ``generate()``)."""
        return False

    def tie_weights(self, missing_keys: set[str] | None = None, recompute_mapping: bool = True) -> None:
        """Nothing to do: the masked-LM decoder reads the input embedding's weight at every call, so the output
        embedding is tied by construction (transformers' ``Trainer`` calls this after loading a checkpoint)."""

    def get_input_embeddings(self) -> nn.Embedding | nn.Parameter:
        """The byte embedding (vocab_size × d_model) of a text model; the latent array (num_latents × d_latents,
        an ``nn.Parameter``, as transformers returns for every Perceiver) of a model without token inputs."""
        embedding = getattr(getattr(self.base_model, "input_preprocessor", None), "embeddings", None)
        if isinstance(embedding, nn.Embedding):
            return embedding
        return self.base_model.encoder.latents

    def set_input_embeddings(self, value: nn.Embedding | nn.Parameter) -> None:
        """Replace the byte embedding (same width d_model; a new vocabulary size also sets ``config.vocab_size``),
        or, for a model without token inputs, the latent array (an ``nn.Parameter`` of the same shape)."""
        current = self.get_input_embeddings()
        if isinstance(current, nn.Parameter):
            if not isinstance(value, nn.Parameter) or value.shape != current.shape:
                raise ValueError(
                    f"{type(self).__name__} takes no token ids: its input embeddings are the latents, an "
                    f"nn.Parameter of shape {tuple(current.shape)}; got {type(value).__name__} "
                    f"{tuple(getattr(value, 'shape', ()))}"
                )
            self.base_model.encoder.latents = value
            return
        if not isinstance(value, nn.Embedding) or value.embedding_dim != current.embedding_dim:
            raise ValueError(
                f"the input embedding must be an nn.Embedding of width {current.embedding_dim}; got {value}"
            )
        decoder = getattr(self, "embedding_decoder", None)
        if decoder is not None and value.num_embeddings != current.num_embeddings:
            raise ValueError(
                f"{type(self).__name__} decodes into its {current.num_embeddings} input embeddings; an embedding of "
                f"{value.num_embeddings} rows would not fit its output bias"
            )
        self.base_model.input_preprocessor.embeddings = value
        self.config.vocab_size = value.num_embeddings

    def get_output_embeddings(self) -> None:
        """None, as transformers' Perceiver: the masked-LM decoder reads the input embedding's weight itself."""
        return None

    def enable_input_require_grads(self) -> None:
        """Make the byte embedding's output require grad, so activation checkpointing with frozen embeddings
        (PEFT adapters) still back-propagates; the latents of other models are parameters that already do."""
        embedding = self.get_input_embeddings()
        if isinstance(embedding, nn.Module):
            self._require_grads_hook = embedding.register_forward_hook(
                lambda module, args, output: output.requires_grad_(True)
            )

    def disable_input_require_grads(self) -> None:
        """Undo ``enable_input_require_grads``."""
        hook = self.__dict__.pop("_require_grads_hook", None)
        if hook is not None:
            hook.remove()

    # ---- activation (gradient) checkpointing ----

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each encoder layer in the backward pass instead of storing its activations."""
        self.base_model.encoder.gradient_checkpointing = enabled

    def activation_checkpointing_enable(
        self,
        activation_checkpointing_kwargs: dict[str, Any] | None = None,
        every_n_layers: int = 1,
        offload: bool = False,
    ) -> None:
        """transformers' switch for ``set_gradient_checkpointing(True)`` (transformers' own Perceiver refuses it).

        Every encoder layer is checkpointed with ``torch.utils.checkpoint.checkpoint(use_reentrant=False)``; other
        settings (kwargs, ``every_n_layers`` > 1, ``offload``) raise rather than being ignored.
        """
        kwargs = dict(activation_checkpointing_kwargs or {})
        if kwargs.pop("use_reentrant", False) or kwargs or every_n_layers != 1 or offload:
            raise ValueError(
                "only non-reentrant checkpointing of every layer is supported; got "
                f"kwargs={activation_checkpointing_kwargs}, every_n_layers={every_n_layers}, offload={offload}"
            )
        self.set_gradient_checkpointing(True)

    def gradient_checkpointing_enable(
        self,
        gradient_checkpointing_kwargs: dict[str, Any] | None = None,
        every_n_layers: int = 1,
        offload: bool = False,
    ) -> None:
        """transformers' older name of ``activation_checkpointing_enable``."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, every_n_layers, offload)

    def activation_checkpointing_disable(self) -> None:
        self.set_gradient_checkpointing(False)

    def gradient_checkpointing_disable(self) -> None:
        self.set_gradient_checkpointing(False)

    @property
    def is_activation_checkpointing(self) -> bool:
        return bool(self.base_model.encoder.gradient_checkpointing)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.is_activation_checkpointing

    # ---- loading and saving ----

    @classmethod
    def _from_config(
        cls,
        config: PerceiverConfig,
        *,
        attn_implementation: str | None = None,
        dtype: torch.dtype | str | None = None,
        torch_dtype: torch.dtype | str | None = None,
        **kwargs: Any,
    ) -> PerceiverPreTrainedModel:
        """A freshly initialised model of ``config`` (transformers' spelling, used by its Auto classes and tests):
        ``attn_implementation`` ("eager" or "sdpa") is recorded on a copy of the config, ``dtype`` casts the
        weights, ``kwargs`` go to the constructor (e.g. PerceiverModel's ``decoder=``)."""
        from perceiver_io.config import to_torch_dtype

        if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
            raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass dtype only")
        config = copy.deepcopy(config)
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation
        model = cls(config, **kwargs)
        dtype = dtype if dtype is not None else torch_dtype
        if dtype is not None:
            model.to(to_torch_dtype(dtype, "dtype"))
        return model

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike | None,
        *,
        config: PerceiverConfig | str | os.PathLike | None = None,
        state_dict: Mapping[str, torch.Tensor] | None = None,
        cache_dir: str | os.PathLike | None = None,
        ignore_mismatched_sizes: bool = False,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        revision: str | None = None,
        subfolder: str = "",
        dtype: torch.dtype | str | None = None,
        torch_dtype: torch.dtype | str | None = None,
        device_map: str | int | torch.device | dict[str, Any] | None = None,
        device: str | int | torch.device | None = None,
        output_loading_info: bool = False,
        **kwargs: Any,
    ):
        """Load a model folder (transformers' layout), a hub id (``owner/name``) or a DeepMind file
        (``.pickle``/``.pystate``), in eval mode — transformers' keywords:

        config: a ``PerceiverConfig`` (or a folder/file holding one) to use instead of the stored one.
        state_dict: weights (transformers' names, or ours as ``state_dict()`` gives them) to use instead of the
          folder's; with ``pretrained_model_name_or_path=None`` and ``config=`` nothing is read from disk.
        kwargs: config overrides (``num_labels=3``, ``id2label=…``, any config key); for ``PerceiverModel`` also
          its constructor's arguments (``input_preprocessor=``, ``decoder=``, ``output_postprocessor=``). Any
          other keyword raises TypeError.
        ignore_mismatched_sizes: initialise tensors whose checkpoint shape differs afresh (warning listing them);
          without it such a tensor raises ValueError naming it.
        dtype / torch_dtype: torch dtype, its name (``"bfloat16"``) or ``"auto"`` (the default: the config's
          ``dtype``, else the checkpoint's).
        device_map / device: one device (``"cpu"``, ``"cuda:0"``, 0, ``torch.device``, ``{"": "cpu"}``, or
          ``"auto"``: the first GPU if any, else the CPU); a map over several devices raises.
        output_loading_info: also return ``{"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"}``.
        cache_dir, force_download, local_files_only, token, revision: handed to ``huggingface_hub`` for hub ids
          (``HF_HUB_OFFLINE=1`` loads from its cache); they raise for a local path. subfolder: a folder inside the
          repository or local folder.

        Loading a checkpoint of the same class is exact: a missing or unexpected tensor raises
        ``CheckpointMismatchError`` (a ValueError, and a RuntimeError as transformers raises). A checkpoint of
        another class (e.g. ``PerceiverForSequenceClassification.from_pretrained("deepmind/language-perceiver")``,
        or a head's checkpoint into ``PerceiverModel``) loads the shared tensors, initialises the rest and drops
        the unused ones, with a warning listing both.
        """
        from perceiver_io.checkpoints.hub import HubOptions
        from perceiver_io.checkpoints.loading import load_pretrained, one_device

        if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
            raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass dtype only")
        return load_pretrained(
            cls,
            pretrained_model_name_or_path,
            config=config,
            state_dict=state_dict,
            hub=HubOptions(cache_dir, force_download, local_files_only, token, revision, subfolder),
            ignore_mismatched_sizes=ignore_mismatched_sizes,
            dtype=dtype if dtype is not None else torch_dtype,
            device=one_device(device_map, device),
            output_loading_info=output_loading_info,
            **kwargs,
        )

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` + ``model.safetensors`` in transformers' layout (atomically)."""
        from perceiver_io.checkpoints.loading import save_pretrained

        save_pretrained(self, directory)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str = "Upload model",
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
    ) -> Any:
        """``save_pretrained`` into a temporary folder, then upload it to hub repository ``repo_id`` (created if
        needed); returns huggingface_hub's commit info. Needs ``pip install perceiver_io[hub]`` and a token."""
        try:
            from huggingface_hub import HfApi
        except ImportError:
            raise ImportError("push_to_hub needs `pip install perceiver_io[hub]`") from None
        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=commit_message,
                revision=revision,
                create_pr=create_pr,
            )


class PerceiverModel(PerceiverPreTrainedModel):
    """The architecture with pluggable ends (same arguments as transformers' ``PerceiverModel``).

    Without an input preprocessor, inputs are (B, M, d_model) arrays. Without a decoder, the output's
    ``last_hidden_state`` holds the latents (B, num_latents, d_latents) and ``logits`` is None.
    """

    def __init__(
        self,
        config: PerceiverConfig,
        decoder: nn.Module | None = None,
        input_preprocessor: nn.Module | None = None,
        output_postprocessor: nn.Module | None = None,
    ) -> None:
        super().__init__(config)
        self.input_preprocessor = input_preprocessor
        self.encoder = PerceiverEncoder(
            config, input_preprocessor.num_channels if input_preprocessor is not None else config.d_model
        )
        self.decoder = decoder
        self.output_postprocessor = output_postprocessor

    def forward(
        self,
        inputs: torch.Tensor | Mapping[str, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        subsampled_output_points: Mapping[str, torch.Tensor] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        *,
        query_mask: torch.Tensor | None = None,
    ) -> PerceiverModelOutput | tuple:
        """inputs: raw inputs for the preprocessor (or (B, M, d_model)); attention_mask: (B, M), 1 = real input;
        query_mask: (B, Nq) decoder query mask (DeepMind's MLM masks padded queries; transformers has none).

        ``output_attentions``, ``output_hidden_states`` and ``return_dict`` default (None) to the config's fields;
        ``return_dict=False`` returns transformers' tuple (see ``transformers_tuple``).
        """
        output_attentions = config_default(output_attentions, self.config.output_attentions, "output_attentions")
        output_hidden_states = config_default(
            output_hidden_states, self.config.output_hidden_states, "output_hidden_states"
        )
        return_dict = config_default(return_dict, self.config.return_dict, "return_dict")
        encoded = self.encode(
            inputs,
            attention_mask,
            interpolate_pos_encoding,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        out = PerceiverModelOutput(
            last_hidden_state=encoded.latents,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            cross_attentions=encoded.cross_attentions,
        )
        if self.decoder is not None:
            decoded = self.decode(encoded, subsampled_output_points, query_mask, output_attentions=output_attentions)
            out.logits = decoded.logits
            if output_attentions and decoded.cross_attentions is not None:  # None: a decoder that keeps no maps
                out.cross_attentions = out.cross_attentions + decoded.cross_attentions
        return out if return_dict else transformers_tuple(out)

    def encode(
        self,
        inputs: torch.Tensor | Mapping[str, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        *,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> Encoded:
        """The encoder half of ``forward``: preprocess, cross-attend into the latents, self-attend.

        Decoding several query sets from one ``encode`` (``decode``) gives what as many ``forward`` calls give,
        without re-running the encoder: the video autoencoder decodes its 800k outputs in chunks this way.
        """
        dtype = parameter_dtype(self.encoder)
        if self.input_preprocessor is not None:
            x, modality_sizes, without_pos = self.input_preprocessor(
                inputs, interpolate_pos_encoding=interpolate_pos_encoding
            )
            check_floating("inputs", x, dtype)  # preprocessors without parameters pass their input dtype on
        else:
            check_model_inputs("inputs", inputs, self.config.d_model, dtype)
            x, modality_sizes, without_pos = inputs, None, None
        mask = _check_mask(attention_mask, x.shape[:2], "attention_mask")
        out = self.encoder(x, mask, output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        return Encoded(
            latents=out.last_hidden_state,
            inputs=x,
            modality_sizes=modality_sizes,
            inputs_without_pos=without_pos,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            cross_attentions=out.cross_attentions,
        )

    def decode(
        self,
        encoded: Encoded,
        subsampled_output_points: Mapping[str, torch.Tensor] | None = None,
        query_mask: torch.Tensor | None = None,
        *,
        output_attentions: bool = False,
    ) -> PerceiverDecoderOutput:
        """The decoder half of ``forward``: build the queries, cross-attend to the latents, postprocess → logits,
        and with ``output_attentions`` the decoder's cross-attention probabilities."""
        if self.decoder is None:
            raise ValueError("this PerceiverModel has no decoder; its output is the latents from encode()")
        query = self.decoder.queries(
            _split(encoded.inputs, encoded.modality_sizes),
            subsampled_points=subsampled_output_points,
            inputs_without_pos=encoded.inputs_without_pos,
        )
        qmask = None if query_mask is None else _check_mask(query_mask, query.shape[:2], "query_mask")
        out = self.decoder(query, encoded.latents, qmask, output_attentions=output_attentions)
        if self.output_postprocessor is None:
            return out
        if encoded.modality_sizes is not None:
            logits = self.output_postprocessor(
                out.logits, modality_sizes=self.decoder.queries.output_sizes(subsampled_output_points)
            )
        else:
            logits = self.output_postprocessor(out.logits)
        return PerceiverDecoderOutput(logits=logits, cross_attentions=out.cross_attentions)


@dataclass
class Encoded:
    """What ``PerceiverModel.encode`` hands to ``decode``: ``latents`` (B, N, D); ``inputs`` (B, M, C) the
    preprocessed inputs (flow and multimodal queries are built from them); ``modality_sizes`` {name: M_m} or
    None; ``inputs_without_pos`` the inputs before position encodings (flow's queries) or None; the encoder's
    ``hidden_states``, ``attentions`` and ``cross_attentions`` when asked for (see ``PerceiverModelOutput``)."""

    latents: torch.Tensor
    inputs: torch.Tensor
    modality_sizes: Mapping[str, int] | None
    inputs_without_pos: torch.Tensor | None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


def transformers_tuple(output: ModelOutput) -> tuple:
    """``return_dict=False``'s tuple, laid out as transformers lays it out: ``output.to_tuple()`` (the set fields in
    order), except that transformers appends the decoder's cross-attention maps after the encoder's one-map tuple
    as bare tensors instead of inside it: (..., (encoder map,), decoder map)."""
    items = output.to_tuple()
    cross = output.cross_attentions
    if cross is None or len(cross) < 2:
        return items
    return (*items[:-1], cross[:1], *cross[1:])


def config_default(value: bool | None, default: bool, name: str) -> bool:
    """A forward's boolean option: None takes the config's ``default``."""
    if value is None:
        return default
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True, False or None (the config's {default}); got {value!r}")
    return value


def _check_mask(mask: torch.Tensor | None, shape: torch.Size, name: str) -> torch.Tensor | None:
    """(B, M) mask of 0/1 or bool → bool, checked against the (B, M) it applies to."""
    if mask is None:
        return None
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(mask.shape)} but the inputs it masks are {tuple(shape)}")
    if mask.dtype == torch.bool:
        return mask
    if values_checkable(mask) and not bool(((mask == 0) | (mask == 1)).all()):
        bad = int((~((mask == 0) | (mask == 1))).sum())
        raise ValueError(f"{name} has {bad} values other than 0 and 1 (NaN included); expected a 0/1 or bool mask")
    return mask != 0


def _split(x: torch.Tensor, modality_sizes: Mapping[str, int] | None) -> torch.Tensor | dict[str, torch.Tensor]:
    """Flat multimodal inputs (B, M, C) → per-modality views, in sorted order (DeepMind's ``restructure``)."""
    if modality_sizes is None:
        return x
    out, start = {}, 0
    for m in sorted(modality_sizes):
        out[m] = x[:, start : start + modality_sizes[m]]
        start += modality_sizes[m]
    return out
