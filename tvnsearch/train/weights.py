"""Trained weights as one self-describing safetensors file.

The file holds the state dict, and in its metadata (string to string) all that running the
network again needs: the genome (canonical JSON), the clip it was trained on (frames, frame
stride, resolution, normalisation) and the class names. A weights file is therefore never
separated from the architecture and input it belongs to; safetensors stores tensors only, so
reading one runs no code. A search keeps one per trained candidate in
``RUN/weights/candidate-<id>.safetensors``, written by the driver before that candidate's
lineage row; an export copies it as ``weights.safetensors``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tvnsearch.data.clips import ClipSpec, Normalization
from tvnsearch.errors import InputError, Problem
from tvnsearch.files import atomic_write_bytes
from tvnsearch.genome.genes import Genome, genome_from_dict
from tvnsearch.models.builder import build_model

WEIGHTS_FORMAT = "tvnsearch.weights/1"
WEIGHTS_DIR = "weights"  # inside a run folder


@dataclass(frozen=True)
class ModelInfo:
    """What running a trained network needs besides its weights."""

    genome: Genome
    clip: ClipSpec
    classes: tuple[str, ...]  # the output order of the logits
    multi_label: bool = False  # sigmoid per class instead of a softmax over classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_metadata(self) -> dict[str, str]:
        return {
            "format": WEIGHTS_FORMAT,
            "genome": self.genome.canonical_json,
            "clip": json.dumps(dataclasses.asdict(self.clip)),
            "classes": json.dumps(list(self.classes)),
            "multi_label": json.dumps(self.multi_label),
        }


@dataclass(frozen=True)
class SavedWeights:
    state: dict[str, Tensor]
    info: ModelInfo


def weights_bytes(model: nn.Module, info: ModelInfo) -> bytes:
    """The model's state dict (on the CPU) and ``info`` as the bytes of a safetensors file."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save(state, metadata=info.to_metadata())


def read_weights(path: str | Path) -> SavedWeights:
    """A weights file as written by ``weights_bytes``; anything else is an ``InputError``."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (OSError, SafetensorError) as exc:
        raise InputError(str(path), f"not a readable safetensors file: {exc}") from None
    return SavedWeights(state, info_from_metadata(metadata, source=str(path)))


def info_from_metadata(metadata: dict[str, str], *, source: str) -> ModelInfo:
    if metadata.get("format") != WEIGHTS_FORMAT:
        why = f"must be {WEIGHTS_FORMAT!r}, but got {metadata.get('format')!r}"
        raise InputError(source, [Problem("metadata.format", why)])
    values = {k: _json(metadata, k, source) for k in ("genome", "clip", "classes", "multi_label")}
    genome = genome_from_dict(values["genome"], source=f"{source}: metadata.genome")
    classes = values["classes"]
    problems = []
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        problems.append(Problem("metadata.classes", f"must be a list of names, got {classes!r}"))
    if not isinstance(values["multi_label"], bool):
        problems.append(Problem("metadata.multi_label", "must be true or false"))
    clip = clip_from_dict(values["clip"])
    if clip is None:
        problems.append(Problem("metadata.clip", f"not a clip spec: {values['clip']!r}"))
    if problems:
        raise InputError(source, problems)
    return ModelInfo(genome, clip, tuple(classes), values["multi_label"])


def clip_from_dict(data: Any) -> ClipSpec | None:
    """A ``ClipSpec`` from ``dataclasses.asdict`` form, or None if ``data`` is not one."""
    try:
        norm = data["normalization"]
        clip = ClipSpec(
            int(data["num_frames"]),
            int(data["frame_stride"]),
            int(data["resolution"]),
            Normalization(tuple(map(float, norm["mean"])), tuple(map(float, norm["std"]))),
        )
    except (KeyError, TypeError, ValueError):
        return None
    sizes = (len(clip.normalization.mean), len(clip.normalization.std))
    return clip if sizes == (3, 3) else None


def _json(metadata: dict[str, str], key: str, source: str) -> Any:
    try:
        return json.loads(metadata[key])
    except KeyError:
        raise InputError(source, [Problem(f"metadata.{key}", "missing")]) from None
    except json.JSONDecodeError as exc:
        raise InputError(source, [Problem(f"metadata.{key}", f"not JSON: {exc.msg}")]) from None


def load_model(path: str | Path) -> tuple[nn.Module, ModelInfo]:
    """The network of a weights file, built from its genome, weights loaded, in eval mode."""
    saved = read_weights(path)
    model = build_model(saved.info.genome, saved.info.num_classes)
    try:
        model.load_state_dict(saved.state, strict=True)
    except RuntimeError as exc:
        why = str(exc).splitlines()[0]
        raise InputError(str(path), f"the weights do not fit the genome: {why}") from None
    return model.eval(), saved.info


def run_weights_path(run_dir: str | Path, candidate_id: int) -> Path:
    return Path(run_dir) / WEIGHTS_DIR / f"candidate-{candidate_id}.safetensors"


def save_run_weights(run_dir: str | Path, candidate_id: int, data: bytes) -> None:
    """Keep a trained candidate's weights in its run folder (a whole file or none)."""
    atomic_write_bytes(run_weights_path(run_dir, candidate_id), data)


def load_run_weights(run_dir: str | Path, candidate_id: int) -> bytes | None:
    """The weights file a run kept for ``candidate_id``, as bytes; None when it kept none."""
    path = run_weights_path(run_dir, candidate_id)
    return path.read_bytes() if path.is_file() else None


def inherit(model: nn.Module, parent: bytes) -> float:
    """Start ``model`` from a parent's weights (a safetensors file's bytes) wherever a tensor of
    the same name has the same shape: the layers a mutation left alone, and often the head. The
    share of the model's parameters (counted in numbers) that came from the parent."""
    from safetensors.torch import load  # tensors only: reading runs no code

    given = load(parent)
    own = model.state_dict()
    same = [k for k, v in own.items() if k in given and given[k].shape == v.shape]
    with torch.no_grad():
        for name in same:
            own[name].copy_(given[name])
    parameters = dict(model.named_parameters())
    total = sum(p.numel() for p in parameters.values())
    return sum(parameters[k].numel() for k in same if k in parameters) / max(1, total)
