"""Our parameter names ↔ transformers' Perceiver names, as one ordered table of rewrite rules.

Each rule rewrites a fragment of one of our state-dict keys into transformers' spelling; the rules are applied in
order to every key of a model, which yields a one-to-one table for that model (checked when it is built). What the
rules cannot read from a key they take from the model: whether it is a head (keys under ``perceiver.``) or a bare
``PerceiverModel``, where transformers nests its decoder's attention (the decoder's ``hf_prefix``) and, for a
multimodal decoder, each modality's query table (its queries' ``hf_prefixes``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import nn

# (our pattern, transformers' replacement). ``{root}`` is "perceiver." in a head and "" in a bare PerceiverModel;
# ``{dec}`` is where transformers keeps the decoder's attention and query table; ``{mod:NAME}`` is filled per
# modality by ``to_transformers_name``.
RULES: list[tuple[str, str]] = [
    # Encoder: latents and the layer stacks.
    (r"^{root}encoder\.latents$", "{root}embeddings.latents"),
    (r"^{root}encoder\.cross_attn\.", "{root}encoder.cross_attention."),
    (r"^{root}encoder\.self_attns\.", "{root}encoder.self_attends."),
    # Decoders: the multimodal query padding and per-modality tables, then any decoder's queries / attention / output.
    (r"^{root}decoder\.queries\.padding\.", "{root}decoder.padding."),
    (
        r"^{root}decoder\.queries\.providers\.(\w+)\.(?:positions\.)?pos\.embeddings$",
        r"{root}decoder.modalities.\1.{mod:\1}output_position_encodings.position_embeddings",
    ),
    (
        r"^{root}decoder\.queries\.(?:positions\.)?pos\.embeddings$",
        "{dec}output_position_encodings.position_embeddings",
    ),
    (r"^{root}decoder\.cross_attn\.", "{dec}decoding_cross_attention."),
    (r"^{root}decoder\.final\.", "{dec}final_layer."),
    # Inside every PerceiverLayer.
    (r"\.norm_q\.", ".attention.self.layernorm1."),
    (r"\.norm_kv\.", ".attention.self.layernorm2."),
    (r"\.attn\.q\.", ".attention.self.query."),
    (r"\.attn\.k\.", ".attention.self.key."),
    (r"\.attn\.v\.", ".attention.self.value."),
    (r"\.attn\.o\.", ".attention.output.dense."),
    (r"\.norm_mlp\.", ".layernorm."),
    (r"\.mlp\.fc1\.", ".mlp.dense1."),
    (r"\.mlp\.fc2\.", ".mlp.dense2."),
    # Image and audio preprocessors' learned position tables (decoder tables are ``pos``, handled above).
    (r"(^|\.)position\.embeddings$", r"\1position_embeddings.position_embeddings"),
]

_MODALITY = re.compile(r"\{mod:(\w+)\}")


def to_transformers_name(
    key: str,
    root: str = "perceiver.",
    decoder_prefix: str = "decoder.",
    modality_prefixes: Mapping[str, str] | None = None,
) -> str:
    """One of our keys in transformers' spelling. ``decoder_prefix`` is the decoder's ``hf_prefix``; a modality
    missing from ``modality_prefixes`` sits inside a wrapping decoder ("decoder.")."""
    dec = f"{root}decoder.{decoder_prefix}"
    for pattern, replacement in RULES:
        pattern = pattern.replace("{root}", re.escape(root))
        replacement = replacement.replace("{root}", root).replace("{dec}", dec)
        key = re.sub(pattern, replacement, key)
    prefixes = modality_prefixes or {}
    return _MODALITY.sub(lambda m: prefixes.get(m.group(1), "decoder."), key)


def name_table(model: nn.Module) -> dict[str, str]:
    """{our key: transformers' key} for every entry of ``model.state_dict()``; ``model`` is a head or a bare
    ``PerceiverModel`` with any preprocessor, decoder and postprocessor."""
    perceiver = getattr(model, "perceiver", model)
    root = "" if perceiver is model else "perceiver."
    decoder = getattr(perceiver, "decoder", None)
    decoder_prefix = getattr(decoder, "hf_prefix", "decoder.")
    modality_prefixes = getattr(getattr(decoder, "queries", None), "hf_prefixes", {})
    table = {k: to_transformers_name(k, root, decoder_prefix, modality_prefixes) for k in model.state_dict()}
    if len(set(table.values())) != len(table):
        raise AssertionError("the transformers name table maps two parameters to one name")
    return table
