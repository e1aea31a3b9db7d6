"""DeepMind's original Haiku checkpoints → our models, by readable name tables (no JAX, no pickle code run).

Each released model has a table of Haiku *modules* → our modules with a kind (``cross``/``self`` attention layer,
``linear``, ``conv``, ``table``…); ``expand`` turns it into one entry per array, with the layout change each kind
needs: Haiku Linear ``w`` is [in, out] (ours [out, in]); Conv2D ``w`` is [kh, kw, in, out] (ours [out, in, kh, kw] —
a plain axis reversal, as transformers' converter does, would swap kh and kw); BatchNorm arrays are [1, 1, 1, C].
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from perceiver_io.checkpoints.safe_pickle import identify_checkpoint, load_haiku_pickle
from perceiver_io.config import PerceiverConfig
from perceiver_io.model import no_init_weights
from perceiver_io.released import RELEASED

ENC, DEC = "perceiver.encoder", "perceiver.decoder"
PRE, POST = "perceiver.input_preprocessor", "perceiver.output_postprocessor"


def _encoder(haiku: str, num_self_attends: int) -> dict[str, tuple[str, str]]:
    table = {
        f"{haiku}/~/trainable_position_encoding": (f"{ENC}.latents", "param"),
        f"{haiku}/~/cross_attention": (f"{ENC}.cross_attn", "cross"),
    }
    for i in range(num_self_attends):
        table[f"{haiku}/~/self_attention" + (f"_{i}" if i else "")] = (f"{ENC}.self_attns.{i}", "self")
    return table


def _classification_decoder() -> dict[str, tuple[str, str]]:
    return {
        "classification_decoder/~/basic_decoder/~/trainable_position_encoding": (
            f"{DEC}.queries.pos.embeddings",
            "param",
        ),
        "classification_decoder/~/basic_decoder/cross_attention": (f"{DEC}.cross_attn", "cross"),
        "classification_decoder/~/basic_decoder/output": (f"{DEC}.final", "linear"),
    }


def module_table(name: str, config: PerceiverConfig) -> dict[str, tuple[str, str]]:
    """{Haiku module path: (our module or parameter, kind)} for released model ``name``."""
    n = config.num_self_attends_per_block
    if name == "language-perceiver":
        return {
            "embed": (f"{PRE}.embeddings.weight", "embed"),
            "trainable_position_encoding": (f"{PRE}.position_embeddings.weight", "param"),
            **_encoder("perceiver_encoder", n),
            "basic_decoder/~/trainable_position_encoding": (f"{DEC}.queries.pos.embeddings", "param"),
            "basic_decoder/cross_attention": (f"{DEC}.cross_attn", "cross"),
            "embedding_decoder": ("embedding_decoder.bias", "bias"),
        }
    if name.startswith("vision-perceiver"):
        table = {**_encoder("perceiver_encoder", n), **_classification_decoder()}
        if name == "vision-perceiver-learned":
            net = "image_preprocessor/~_build_network_inputs"
            table["image_preprocessor/~/conv2_d"] = (f"{PRE}.convnet_1x1", "conv")
            table[f"{net}/trainable_position_encoding"] = (f"{PRE}.position.embeddings", "param")
            table[f"{net}/position_encoding_projector/linear"] = (f"{PRE}.positions_projection", "linear")
        if name == "vision-perceiver-conv":
            stem = "image_preprocessor/~/conv2_d_downsample/~"
            table[f"{stem}/conv"] = (f"{PRE}.convnet.conv", "conv")
            table[f"{stem}/batchnorm"] = (f"{PRE}.convnet.batchnorm", "batchnorm")
        return table
    if name == "optical-flow-perceiver":
        return {
            "image_preprocessor/patches_linear": (f"{PRE}.conv_after_patches", "linear"),
            **_encoder("perceiver_encoder", n),
            "flow_decoder/~/basic_decoder/cross_attention": (f"{DEC}.cross_attn", "cross"),
            "flow_decoder/~/basic_decoder/output": (f"{DEC}.final", "linear"),
        }
    if name == "multimodal-perceiver":
        table = {
            **_encoder("encoder", n),
            "classification_decoder/~/basic_decoder/~/trainable_position_encoding": (
                f"{DEC}.queries.providers.label.pos.embeddings",
                "param",
            ),
            "multimodal_decoder/~/basic_decoder/cross_attention": (f"{DEC}.cross_attn", "cross"),
            "multimodal_decoder/~/basic_decoder/output": (f"{DEC}.final", "linear"),
            "audio_postprocessor/linear": (f"{POST}.modalities.audio.classifier", "linear"),
            "projection_postprocessor/linear": (f"{POST}.modalities.image.classifier", "linear"),
            "classification_postprocessor/linear": (f"{POST}.modalities.label.classifier", "linear"),
        }
        for m in ("audio", "image", "label"):
            table[f"multimodal_preprocessor/{m}_padding"] = (f"{PRE}.padding.{m}", "param")
            table[f"multimodal_preprocessor/{m}_mask_token"] = (f"{PRE}.mask.{m}", "param")
            table[f"multimodal_decoder/~decoder_query/{m}_padding"] = (f"{DEC}.queries.padding.{m}", "param")
        return table
    raise ValueError(f"no DeepMind table for {name!r}")


def _t(a: np.ndarray) -> np.ndarray:
    return a.T


def _hwio_to_oihw(a: np.ndarray) -> np.ndarray:
    return a.transpose(3, 2, 0, 1)


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1)


def _same(a: np.ndarray) -> np.ndarray:
    return a


# Per kind: Haiku array name → (our suffix, layout change). Attention layers list their sub-modules.
_LAYER = {
    "attention/linear": ".attn.q",
    "attention/linear_1": ".attn.k",
    "attention/linear_2": ".attn.v",
    "attention/linear_3": ".attn.o",
    "mlp/linear": ".mlp.fc1",
    "mlp/linear_1": ".mlp.fc2",
}
_NORMS = {
    "cross": {"layer_norm": ".norm_q", "layer_norm_1": ".norm_kv", "layer_norm_2": ".norm_mlp"},
    "self": {"layer_norm": ".norm_q", "layer_norm_1": ".norm_mlp"},
}


def expand(table: dict[str, tuple[str, str]]) -> dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """Module table → {Haiku array path: (our state-dict key, layout change)}."""
    out: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {}
    for haiku, (ours, kind) in table.items():
        if kind in ("cross", "self"):
            for sub, suffix in _LAYER.items():
                out[f"{haiku}/{sub}/w"] = (f"{ours}{suffix}.weight", _t)
                out[f"{haiku}/{sub}/b"] = (f"{ours}{suffix}.bias", _same)
            for sub, suffix in _NORMS[kind].items():
                out[f"{haiku}/{sub}/scale"] = (f"{ours}{suffix}.weight", _same)
                out[f"{haiku}/{sub}/offset"] = (f"{ours}{suffix}.bias", _same)
        elif kind == "linear":
            out[f"{haiku}/w"], out[f"{haiku}/b"] = (f"{ours}.weight", _t), (f"{ours}.bias", _same)
        elif kind == "conv":
            out[f"{haiku}/w"] = (f"{ours}.weight", _hwio_to_oihw)
            if not ours.endswith(".conv"):  # the 7×7 stem conv has no bias
                out[f"{haiku}/b"] = (f"{ours}.bias", _same)
        elif kind == "batchnorm":
            out[f"{haiku}/scale"], out[f"{haiku}/offset"] = (f"{ours}.weight", _flat), (f"{ours}.bias", _flat)
            out[f"{haiku}/~/mean_ema/average"] = (f"{ours}.running_mean", _flat)
            out[f"{haiku}/~/var_ema/average"] = (f"{ours}.running_var", _flat)
        elif kind == "param":
            out[f"{haiku}/pos_embs"] = (ours, _same)
        elif kind == "embed":
            out[f"{haiku}/embeddings"] = (ours, _same)
        elif kind == "bias":
            out[f"{haiku}/bias"] = (ours, _same)
        else:
            raise AssertionError(f"unknown kind {kind!r}")
    return out


# EMA bookkeeping the eval-mode model does not use.
_IGNORED_STATE = ("/hidden", "/counter")


def deepmind_config(name: str, **overrides: Any) -> PerceiverConfig:
    """The released configuration with DeepMind's numerics (and its learned-position decoder without residual)."""
    cfg = PerceiverConfig.released(name).with_deepmind_numerics()
    if name == "vision-perceiver-learned":
        cfg.decoder_query_residual = False
    return PerceiverConfig.from_dict(cfg.to_dict(), **overrides)


def load_deepmind(cls: type | None, path: str | os.PathLike, **config_overrides: Any) -> nn.Module:
    """Build the model a DeepMind file holds and load it; ``cls`` (if given) must be that model's head."""
    import perceiver_io

    ckpt = load_haiku_pickle(path)
    try:
        name = identify_checkpoint(ckpt, exact=False)  # load_haiku_arrays then checks every array by name
    except ValueError as err:
        raise ValueError(f"{os.fspath(path)}: {err}") from None  # the caller needs to know which file
    head = RELEASED[name].head
    if cls is not None and cls.__name__ not in (head, "PerceiverModel"):
        raise ValueError(f"{Path(path).name} holds DeepMind's {name} ({head}); it cannot be loaded as {cls.__name__}")
    with no_init_weights():  # every parameter is loaded below, and a missing one raises
        model = getattr(perceiver_io, head)(deepmind_config(name, **config_overrides))
    load_haiku_arrays(model, name, {**ckpt.params, **ckpt.state})
    return model.eval()


def load_haiku_arrays(model: nn.Module, name: str, arrays: dict[str, np.ndarray]) -> None:
    """Copy Haiku arrays into ``model`` through the table; raise listing unmapped, missing and mis-shaped names."""
    table = expand(module_table(name, model.config))
    ours = model.state_dict()
    unmapped = [k for k in arrays if k not in table and not k.endswith(_IGNORED_STATE)]
    missing = [k for k in table if k not in arrays]
    targets = {key for key, _ in table.values()}
    untouched = [k for k in ours if k not in targets and not k.endswith("num_batches_tracked")]
    converted, misshaped = {}, []
    for haiku, (key, layout) in table.items():
        if haiku not in arrays:
            continue
        value = torch.from_numpy(np.ascontiguousarray(layout(np.asarray(arrays[haiku], dtype=np.float32))))
        if value.shape != ours[key].shape:
            misshaped.append(f"{haiku} {tuple(arrays[haiku].shape)} → {key} {tuple(ours[key].shape)}")
        converted[key] = value
    problems = [
        f"{len(items)} {title}: {', '.join(items[:10])}{' …' if len(items) > 10 else ''}"
        for title, items in (
            ("unmapped Haiku arrays", unmapped),
            ("missing Haiku arrays", missing),
            ("mis-shaped arrays", misshaped),
            ("model parameters without a source", untouched),
        )
        if items
    ]
    if problems:
        raise ValueError(f"DeepMind checkpoint does not fit {name}:\n" + "\n".join(problems))
    for k, v in ours.items():
        converted.setdefault(k, v)
    model.load_state_dict(converted, strict=True)


def convert_deepmind(path: str | os.PathLike, out_dir: str | os.PathLike, **config_overrides: Any) -> nn.Module:
    """DeepMind file → transformers-style folder (config.json + model.safetensors); returns the model."""
    model = load_deepmind(None, path, **config_overrides)
    model.save_pretrained(out_dir)
    return model
