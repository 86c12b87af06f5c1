"""Export found architectures from a run folder: one self-contained folder per network.

::

    OUT/<run>-c<id>/  genome.json          native canonical genome (always)
                      tvn.json             published TVN format (tvn-json; when the genome fits)
                      weights.safetensors  trained weights + genome, clip, classes in metadata
                      model.ts             TorchScript (torchscript), eval mode
                      model.onnx           ONNX (onnx), checked in onnxruntime
                      card.json            model card, machine-readable
                      MODEL_CARD.md        the same card, for people

Everything comes from the run folder alone (recipe, lineage, ``weights/``), without Ray or the
data. Every requested candidate is checked before anything is written, and each folder is
built under a hidden name and renamed into place: a folder under OUT is whole or absent. Both
compiled models take a float32 clip ``(B, 3, T, H, W)``, already normalised, with any batch
size; each is compared with the PyTorch model on a random clip of another batch size than the
one it was made with, and the largest absolute difference goes into the card.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from tvnsearch.data.clips import ClipSpec
from tvnsearch.errors import InputError, Problem
from tvnsearch.export.model_card import candidate_card, render_markdown
from tvnsearch.genome.tvn_format import to_tvn_dict
from tvnsearch.search.lineage import best, read_lineage
from tvnsearch.search.runs import load_run
from tvnsearch.train.weights import ModelInfo, load_model, run_weights_path

FORMATS = ("torchscript", "onnx", "tvn-json")
EXAMPLE_BATCH = 2  # torch.export would fix a batch dimension of size 1 to 1
CHECK_BATCH = 3  # not the example's: shows that the batch dimension was left free


@dataclass(frozen=True)
class Exported:
    folder: Path
    files: tuple[str, ...]
    torchscript_max_abs_diff: float | None
    onnx_max_abs_diff: float | None
    seconds: float


def parse_formats(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        why = f"must be a comma-separated list of {list(FORMATS)}, but got {text!r}"
        raise InputError("--format", why)
    return names


def select_candidates(
    frame: pd.DataFrame,
    *,
    source: str,
    use_best: bool = False,
    ids: Sequence[int] = (),
    pareto: tuple[str, str] | None = None,
) -> list[int]:
    """The candidate ids to export: the fittest, the given ones, or the Pareto front over
    ``pareto`` = (x, y) objectives."""
    if use_best:
        top = best(frame, 1)
        if not len(top):
            raise InputError(source, "no candidate has been trained yet")
        return [int(top.at[0, "candidate_id"])]
    if pareto is not None:
        return _pareto_ids(frame, *pareto)
    return list(dict.fromkeys(ids))


def _pareto_ids(frame: pd.DataFrame, x: str, y: str) -> list[int]:
    from tvnsearch.inspect.pareto import check_objectives, pareto_front

    check_objectives((x, y), ("--x", "--y"), source="--pareto")
    front = pareto_front(frame, objectives=(y, x))
    if not len(front):
        raise InputError("--pareto", f"no trained candidate of this run has both {x} and {y}")
    return sorted(int(c) for c in front["candidate_id"])


def export_run(
    run_dir: str | Path, candidate_ids: Sequence[int], out_dir: str | Path, formats: Sequence[str]
) -> list[Exported]:
    """Export ``candidate_ids`` of the run in ``run_dir`` to ``out_dir/<run>-c<id>/``."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    config = load_run(run_dir)
    frame = read_lineage(run_dir)
    jobs = []
    for cid in candidate_ids:  # check them all before writing anything
        path = weights_path_of(run_dir, frame, cid)
        model, info = load_model(path)
        genome_id = frame.loc[frame["candidate_id"] == cid, "genome_id"].iloc[0]
        if info.genome.id != genome_id:
            why = f"holds genome {info.genome.id}, but candidate {cid} is genome {genome_id}"
            raise InputError(str(path), why)
        dest = export_folder(run_dir, out_dir, cid)
        if dest.exists():
            raise InputError(str(dest), "already exists; remove it or export to another --out")
        jobs.append((cid, path, model, info, dest))
    done = []
    for cid, path, model, info, dest in jobs:
        card = candidate_card(dest.name, info, run_dir, frame, cid, config)
        done.append(write_export(dest, path.read_bytes(), model, info, card, formats))
    return done


def export_folder(run_dir: str | Path, out_dir: str | Path, candidate_id: int) -> Path:
    """Where ``export_run`` puts a candidate's folder: ``out_dir/<run>-c<id>``."""
    return Path(out_dir) / f"{Path(run_dir).name}-c{candidate_id}"


def weights_path_of(run_dir: Path, frame: pd.DataFrame, candidate_id: int) -> Path:
    """The kept weights of a trained candidate, or an ``InputError`` saying why there are none."""
    rows = frame[frame["candidate_id"] == candidate_id]
    where = f"candidate {candidate_id}"
    if not len(rows):
        known = f"0 to {frame['candidate_id'].max()}" if len(frame) else "none yet"
        raise InputError(str(run_dir), [Problem(where, f"not in the lineage (ids: {known})")])
    row = rows.iloc[0]
    path = run_weights_path(run_dir, candidate_id)
    if row["status"] == "duplicate":
        why = f"a duplicate ({row['reason']}): export that candidate instead"
    elif row["status"] != "trained":
        why = f"{row['status']} ({row['reason']}), so it has no trained weights"
    elif not path.is_file():
        why = f"trained, but its weights were not kept (no {path}; search.keep_weights = false?)"
    else:
        return path
    raise InputError(str(run_dir), [Problem(where, why)])


def write_export(
    dest: Path,
    weights: bytes,
    model: nn.Module,
    info: ModelInfo,
    card: dict[str, Any],
    formats: Sequence[str],
) -> Exported:
    """Write one export folder at ``dest`` (which must not exist), whole or not at all."""
    started = time.perf_counter()
    # Not mkdtemp: its folder is private (0700), and this one becomes the export.
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:  # name the folder asked for, not the hidden one beside it
        raise type(exc)(exc.errno, exc.strerror, str(dest)) from None
    try:
        card = _write_files(tmp, weights, model.eval(), info, card, formats)
        (tmp / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        (tmp / "MODEL_CARD.md").write_text(render_markdown(card))
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    checks = card["checks"]
    return Exported(
        dest,
        tuple(card["files"]),
        checks["torchscript_max_abs_diff"],
        checks["onnx_max_abs_diff"],
        time.perf_counter() - started,
    )


def _write_files(
    folder: Path,
    weights: bytes,
    model: nn.Module,
    info: ModelInfo,
    card: dict[str, Any],
    formats: Sequence[str],
) -> dict[str, Any]:
    files = {"genome.json": "the genome, native canonical JSON (tvnsearch.genome/1)"}
    (folder / "genome.json").write_text(info.genome.to_json() + "\n")
    tvn, why_not = _tvn_dict(info)
    if tvn is not None and "tvn-json" in formats:
        (folder / "tvn.json").write_text(json.dumps(tvn, indent=2) + "\n")
        files["tvn.json"] = "the genome in the published Tiny Video Networks format"
    (folder / "weights.safetensors").write_bytes(weights)
    files["weights.safetensors"] = "trained weights; metadata: genome, clip and classes"
    example, check = _clip(info.clip, EXAMPLE_BATCH, 0), _clip(info.clip, CHECK_BATCH, 1)
    ts_diff = onnx_diff = None
    if "torchscript" in formats:
        ts_diff = _write_torchscript(model, folder / "model.ts", example, check)
        files["model.ts"] = f"TorchScript (torch.jit.load); max abs diff from PyTorch {ts_diff:.2e}"
    if "onnx" in formats:
        onnx_diff = _write_onnx(model, folder / "model.onnx", example, check)
        files["model.onnx"] = f"ONNX, input `clip`; onnxruntime max abs diff {onnx_diff:.2e}"
    stream_diff = None
    if "torchscript" in formats and info.genome.pipeline_depth > 0:
        stream_diff = _write_stream(model, folder / "stream.ts", check)
        files["stream.ts"] = (
            "TorchScript, frame by frame: forward(frame, state) -> (logits, state), "
            f"initial_state(batch_size), clip_logits(state); max abs diff {stream_diff:.2e}"
        )
    files |= {"card.json": "this card, machine-readable", "MODEL_CARD.md": "this card"}
    checks = {
        "torchscript_max_abs_diff": ts_diff,
        "onnx_max_abs_diff": onnx_diff,
        "stream_max_abs_diff": stream_diff,
    }
    return {
        **card,
        "tvn_format": {"fits": tvn is not None, "why_not": why_not},
        "files": files,
        "checks": checks,
    }


def _tvn_dict(info: ModelInfo) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return to_tvn_dict(info.genome), None
    except InputError as exc:
        return None, "; ".join(str(p) for p in exc.problems)


def _clip(clip: ClipSpec, batch: int, seed: int) -> Tensor:
    """A random clip as the model sees it: uint8 pixels, normalised."""
    shape = (batch, 3, clip.num_frames, clip.resolution, clip.resolution)
    pixels = torch.randint(
        0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )
    return clip.normalization.apply(pixels)


@torch.no_grad()
def _write_torchscript(model: nn.Module, path: Path, example: Tensor, check: Tensor) -> float:
    with warnings.catch_warnings():
        # Tracer warnings about shapes read as Python numbers: the geometry of a TVN is fixed
        # by its genome, and the trace is checked right below on another batch size.
        warnings.simplefilter("ignore")
        torch.jit.trace(model, example).save(str(path))
        loaded = torch.jit.load(str(path))
    return _max_abs_diff(loaded(check), model(check))


@torch.no_grad()
def _write_stream(model: nn.Module, path: Path, check: Tensor) -> float:
    """A pipelined network's step function with explicit state, checked on a whole clip: its
    clip logits after the last frame against the clip forward of the model."""
    from tvnsearch.models.stream_script import export_stream

    export_stream(model, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path))
    state = loaded.initial_state(check.shape[0])
    for frame in check.unbind(2):
        _, state = loaded(frame, state)
    return _max_abs_diff(loaded.clip_logits(state), model(check))


@torch.no_grad()
def _write_onnx(model: nn.Module, path: Path, example: Tensor, check: Tensor) -> float:
    import onnxruntime

    batch = {0: torch.export.Dim("batch")}
    with warnings.catch_warnings(), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")  # deprecation notices from inside the exporter
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["clip"],
            output_names=["logits"],
            dynamic_shapes={"x": batch},
            external_data=False,
            verbose=False,
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"clip": check.numpy()})
    return _max_abs_diff(torch.from_numpy(logits), model(check))


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Only errors from logger ``name`` (the ONNX exporter logs every optional op it skips)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _max_abs_diff(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).abs().max())
