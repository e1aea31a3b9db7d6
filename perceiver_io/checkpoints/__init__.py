"""Readers and writers for DeepMind's released Perceiver IO checkpoints."""
