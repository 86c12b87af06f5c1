"""Recurrent-residual (delta) inference: conv and linear layers that compute on frame differences,
exactly at threshold 0, and the measurement of what that saves on a video.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "network": ["DeltaNetwork", "DeltaSummary", "enable_delta", "fold_batch_norms"],
        "layers": ["DeltaPolicy"],
        "measure": ["DeltaMeasurement", "measure_delta", "static_camera_frames"],
    },
)
