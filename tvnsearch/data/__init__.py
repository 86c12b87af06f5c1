"""Video data: decoding (PyAV), dataset descriptions and splits, the shared frame cache, clips
sized by a genome, and the synthetic motion benchmark.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "video": ["decode_video", "encode_video"],
        "datasets": ["Video", "VideoDataset", "load_dataset"],
        "frame_cache": ["FrameCache", "cache_dir"],
        "clips": ["ClipDataset", "ClipSpec", "Normalization"],
        "synth": ["SynthConfig", "render_video", "write_synth"],
    },
)
