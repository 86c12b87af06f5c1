"""Genomes as PyTorch networks: layers on ``(B, C, T, H, W)`` clips, the builder, and the causal,
pipelined (``pipeline_depth`` k > 0) networks that run frame by frame, with their stage runners.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "builder": ["TVN", "NetworkSummary", "build_model", "count_params", "summarize"],
        "streaming": ["StreamingTVN", "build_streaming_model"],
        "pipeline": ["OneAfterAnother", "StreamPipeline", "ThreadedPipeline"],
        "stream_script": ["export_stream", "script_stream"],
    },
)
