"""Measurement on a device: signatures, timing, memory, profiles and stream timing; constraints
and the gate that judges candidates against them before training; latency predictors.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "device": ["DeviceSignature", "check_device", "device_signature"],
        "profile": ["DEFAULT_SETTINGS", "Profile", "Settings", "describe_profile"],
        "measurement": ["measure"],
        "profiler": ["ProfileCache", "Profiler"],
        "stream_timing": ["StreamTiming", "measure_stream"],
        "constraints": ["Constraints", "constraints_from_dict"],
        "gate": ["Gate", "Verdict"],
        "predictor": ["LatencyPredictor", "Predictor"],
        "lookup_predictor": ["LookupPredictor"],
    },
)
