"""Found networks out of a run: self-contained export folders (weights, TorchScript, ONNX, the
published TVN JSON, a stream module for pipelined networks) and their model cards.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "folders": ["Exported", "export_run", "write_export"],
        "model_card": ["candidate_card", "render_markdown"],
    },
)
