"""Our parameter names ↔ transformers' Perceiver names, as one ordered table of rewrite rules.

Each rule rewrites a fragment of one of our state-dict keys into transformers' spelling; the rules are applied in
order to every key of a model, which yields a one-to-one table for that model (checked when it is built).
"""

from __future__ import annotations

import re

from torch import nn

# (our pattern, transformers' replacement). ``{dec}`` is the head's decoder prefix (``hf_decoder_prefix``).
RULES: list[tuple[str, str]] = [
    # Encoder: latents and the layer stacks.
    (r"^perceiver\.encoder\.latents$", "perceiver.embeddings.latents"),
    (r"^perceiver\.encoder\.cross_attn\.", "perceiver.encoder.cross_attention."),
    (r"^perceiver\.encoder\.self_attns\.", "perceiver.encoder.self_attends."),
    # Decoders: the multimodal query padding and label query, then any decoder's queries / attention / output.
    (r"^perceiver\.decoder\.queries\.padding\.", "perceiver.decoder.padding."),
    (
        r"^perceiver\.decoder\.queries\.providers\.(\w+)\.pos\.embeddings$",
        r"perceiver.decoder.modalities.\1.decoder.output_position_encodings.position_embeddings",
    ),
    (r"^perceiver\.decoder\.queries\.pos\.embeddings$", "{dec}output_position_encodings.position_embeddings"),
    (r"^perceiver\.decoder\.cross_attn\.", "{dec}decoding_cross_attention."),
    (r"^perceiver\.decoder\.final\.", "{dec}final_layer."),
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
    # Image preprocessor's learned position table.
    (
        r"\.input_preprocessor\.position\.embeddings$",
        ".input_preprocessor.position_embeddings.position_embeddings",
    ),
]


def to_transformers_name(key: str, decoder_prefix: str) -> str:
    for pattern, replacement in RULES:
        key = re.sub(pattern, replacement.replace("{dec}", decoder_prefix), key)
    return key


def name_table(model: nn.Module) -> dict[str, str]:
    """{our key: transformers' key} for every entry of ``model.state_dict()``."""
    prefix = model.hf_decoder_prefix
    table = {k: to_transformers_name(k, prefix) for k in model.state_dict()}
    if len(set(table.values())) != len(table):
        raise AssertionError("the transformers name table maps two parameters to one name")
    return table
