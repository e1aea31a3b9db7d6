"""Modality adapters: preprocessors that turn raw inputs into (B, M, C) arrays, and output postprocessors.

Every preprocessor returns ``(inputs_with_pos, modality_sizes, inputs_without_pos)`` as in DeepMind's code and
exposes ``num_channels`` (C).
"""
