"""Partial training and scoring of one genome, its multi-fidelity rungs, its metrics, and
self-describing weights (which a child may inherit)."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "config": ["TrainConfig"],
        "training": [
            "TrainData",
            "TrainResult",
            "prepare_data",
            "train_genome",
            "train_model",
        ],
        "fidelity": ["RungHistory", "Rungs", "rungs_of"],
        "weights": ["ModelInfo", "inherit", "load_model", "read_weights", "weights_bytes"],
    },
)
