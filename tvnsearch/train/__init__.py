"""Partial training and scoring of one genome, its metrics, and self-describing weights."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "training": [
            "TrainConfig",
            "TrainData",
            "TrainResult",
            "prepare_data",
            "train_genome",
            "train_model",
        ],
        "weights": ["ModelInfo", "load_model", "read_weights", "weights_bytes"],
    },
)
