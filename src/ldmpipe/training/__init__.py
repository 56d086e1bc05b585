"""Training loops: one small generic loop plus one loss per model."""

from .loop import EMA, BatchSampler, NonFiniteLossError, TrainSettings, batch_indices, train_loop
from .resume import Checkpointing, checkpointing

__all__ = ["EMA", "BatchSampler", "Checkpointing", "NonFiniteLossError", "checkpointing", "TrainSettings", "batch_indices", "train_loop"]
