"""Export found architectures from a run folder: one self-contained folder per network.

::

    OUT/<run>-c<id>/  genome.json          native canonical genome (always)
                      tvn.json             published TVN format (tvn-json; when the genome fits)
                      weights.safetensors  trained weights + genome, clip, classes in metadata
                      model.ts             TorchScript, frozen (torchscript)
                      model.onnx           ONNX (onnx), checked in onnxruntime
                      model.pte            ExecuTorch, XNNPACK (executorch; where installed)
                      card.json            model card, machine-readable
                      MODEL_CARD.md        the same card, for people

Everything comes from the run folder alone (recipe, lineage, ``weights/``), without Ray or the
data. Every requested candidate is checked before anything is written, and each folder is
built under a hidden name and renamed into place: a folder under OUT is whole or absent. The
compiled files are those of ``tvnsearch.measure.runtimes``, written by the functions the
profiler times them with; the file of the runtime the search was measured in is always among
them, so that the card's latency is that file's. Each takes a float32 clip ``(B, 3, T, H, W)``,
already normalised, with any batch size; each is compared with the PyTorch model on a random
clip of another batch size than the one it was made with, and its relative error goes into the
card.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
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
from tvnsearch.measure.runtimes import (
    RUNTIMES,
    Runtime,
    check_agrees,
    relative_error,
)
from tvnsearch.search.lineage import best, read_lineage
from tvnsearch.search.runs import load_run
from tvnsearch.train.weights import ModelInfo, load_model, run_weights_path

# Each compiled format is a runtime's file (``tvnsearch.measure.runtimes``): the file a search
# timed in that runtime, written by the same function.
FORMAT_RUNTIMES = {"torchscript": "torchscript", "onnx": "onnxruntime", "executorch": "executorch"}
RUNTIME_FORMATS = {runtime: f for f, runtime in FORMAT_RUNTIMES.items()}
FORMATS = (*FORMAT_RUNTIMES, "tvn-json")


@dataclass(frozen=True)
class Exported:
    folder: Path
    files: tuple[str, ...]
    errors: dict[str, float]  # each compiled file's relative error from the PyTorch module
    seconds: float


def parse_formats(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        why = f"must be a comma-separated list of {list(FORMATS)}, but got {text!r}"
        raise InputError("--format", why)
    for name in names:
        _check_can_write(name, source="--format")
    return names


def _check_can_write(name: str, *, source: str) -> None:
    runtime = FORMAT_RUNTIMES.get(name)
    why = RUNTIMES[runtime].missing("cpu") if runtime else None
    if why is not None:
        raise InputError(source, f"cannot write {name}: {why}")


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
    measured_in = RUNTIME_FORMATS.get(config.profiler.runtime)  # eager: the weights, always kept
    if measured_in and measured_in not in formats:
        _check_can_write(measured_in, source=f"{run_dir} (measured in {config.profiler.runtime})")
        formats = (*formats, measured_in)
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
    errors = card["checks"]["relative_errors"]
    return Exported(dest, tuple(card["files"]), errors, time.perf_counter() - started)


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
    errors: dict[str, float] = {}
    clip_shape = (3, info.clip.num_frames, info.clip.resolution, info.clip.resolution)
    for runtime in (RUNTIMES[FORMAT_RUNTIMES[f]] for f in formats if f in FORMAT_RUNTIMES):
        errors[runtime.file_name] = _write_checked(runtime, model, clip_shape, info.clip, folder)
        how = f"{_HOW_TO_RUN[runtime.name]}; relative error from PyTorch {{:.1e}}"
        files[runtime.file_name] = how.format(errors[runtime.file_name])
    if "torchscript" in formats and info.genome.pipeline_depth > 0:
        errors["stream.ts"] = _write_stream(model, folder / "stream.ts", _clip(info.clip, 3, 1))
        files["stream.ts"] = (
            "TorchScript, frame by frame: forward(frame, state) -> (logits, state), "
            f"initial_state(batch_size), clip_logits(state); relative error "
            f"{errors['stream.ts']:.1e}"
        )
    files |= {"card.json": "this card, machine-readable", "MODEL_CARD.md": "this card"}
    return {
        **card,
        "tvn_format": {"fits": tvn is not None, "why_not": why_not},
        "files": files,
        "checks": {"relative_errors": errors},
    }


def _write_checked(
    runtime: Runtime, model: nn.Module, clip_shape: tuple[int, ...], clip: ClipSpec, folder: Path
) -> float:
    """Write ``runtime``'s file with the writer the profiler uses, load it back, and compare it
    with the module on pixels as the model sees them (``Mismatch`` over the tolerance)."""
    path = folder / runtime.file_name
    runtime.write(model, clip_shape, path)
    forward = runtime.load(path, "cpu", torch.get_num_threads())
    check = _clip(clip, runtime.check_batch, 1)
    with torch.inference_mode():
        return check_agrees(runtime.name, forward(check), model(check), "cpu")


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
    return relative_error(loaded.clip_logits(state), model(check))


_HOW_TO_RUN = {
    "torchscript": "TorchScript, frozen (batch norm folded): torch.jit.load",
    "onnxruntime": "ONNX, input `clip`, output `logits`: onnxruntime.InferenceSession",
    "executorch": "ExecuTorch program, XNNPACK delegate: executorch.runtime",
}
