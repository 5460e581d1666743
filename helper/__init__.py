"""Shared machinery of the training scripts: config, loop, checkpoints, logging."""
