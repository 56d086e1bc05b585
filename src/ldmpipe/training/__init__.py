"""Training loops: one small generic loop plus one loss per model."""

from .loop import EMA, NonFiniteLossError, TrainSettings, batch_indices, train_loop

__all__ = ["EMA", "NonFiniteLossError", "TrainSettings", "batch_indices", "train_loop"]
