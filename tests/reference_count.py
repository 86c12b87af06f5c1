"""An independent, literal reading of SEMANTICS.md (reference folder) over the published JSON.

Written apart from tvnsearch.genome.plan/builder on purpose: it walks the published dict directly
and counts trainable parameters step by step, so the tests compare two readings of the same text.
"""

from __future__ import annotations

import math


def reference_walk(cfg: dict, num_classes: int) -> tuple[int, list[tuple[int, int, int, int]]]:
    """(trainable parameters incl. head, per-block output shape (C, T, H, W))."""
    stream = cfg["input_streams"][0] if "input_streams" in cfg else cfg
    size, frames, c = stream["image_size"], stream["num_frames"], 3
    params, shapes = 0, []
    for blk in cfg["blocks"]:
        for r in range(blk["repeats"]):
            c, size, frames, added = _instance(blk, r, c, size, frames)
            params += added
        shapes.append((c, frames, size, size))
    return params + c * num_classes + num_classes, shapes


def _bn(width: int) -> int:
    return 2 * width  # gamma and beta


def _instance(blk: dict, r: int, c: int, size: int, frames: int):
    f, e = int(blk["filters"]), int(blk["expand"])
    expanded = max(f * e, f)
    inv = int(blk.get("inv-bottle", 0))
    in_c, in_size, in_frames = c, size, frames
    spatial_stride = blk["spatial_stride"] if r == 0 else 1
    temporal_stride = blk["temporal_stride"] if r == 0 else 1
    params = 0
    if inv and e > 0:  # step 1
        params += c * expanded + _bn(expanded)
        c = expanded
    width = expanded if inv else f
    k = blk["spatial_kernel"]
    if k != 1:  # step 2
        if blk["spatial_type"] == "std":
            params += c * width + _bn(width) + width * width * k * k + _bn(width)
            c = width
        elif blk["spatial_type"] == "depth":
            params += c * width + _bn(width) + width * k * k + _bn(width)
            c = width
        size = math.ceil(size / spatial_stride)
    k = blk["temporal_kernel"]
    if frames > 1 and r % 2 == 0 and k != 1:  # step 3 (repeats alternate: off on odd r)
        if blk["temporal_type"] == "1d":
            params += c * width * k + _bn(width)
            c = width
        frames = math.ceil(frames / temporal_stride)
    if not inv and e > 0:  # step 4
        params += c * expanded + _bn(expanded)
        c = expanded
    if blk["squeeze"] > 0:  # step 5, sized from `expanded` as the reference does
        hidden = max(int(expanded * blk["squeeze"]), 8)
        params += expanded * hidden + hidden + hidden * expanded + expanded
    if blk["context_gate"]:  # step 6
        params += expanded * expanded + expanded
    if inv and e > 0:  # step 7
        params += c * f + _bn(f)
        c = f
    if blk["skip"] and frames == in_frames:  # step 8
        params += in_c * c + _bn(c)
    del in_size
    return c, size, frames, params
