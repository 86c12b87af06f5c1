"""Model cards: ``card.json`` (machine-readable) and ``MODEL_CARD.md`` (the same, for people).

A card says what a network eats (frames, frame stride, resolution, normalisation, layout), what
it returns (classes), what it costs (parameters, FLOPs, memory, runtimes with the device each
was measured on), how well it did (scores after the run's partial training), how it was trained
(the run's frozen recipe) and where it came from (its ancestry, mutation by mutation). Every
value that was never measured is ``null`` in JSON and "not measured" in the text.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from tvnsearch.data.clips import ClipSpec
from tvnsearch.genome.cost import count_cost
from tvnsearch.measure.runtimes import RUNTIMES
from tvnsearch.search.lineage import ancestors
from tvnsearch.search.recipe import RunConfig
from tvnsearch.train.weights import ModelInfo

CARD_SCHEMA = "tvnsearch.model-card/1"
LAYOUT = "(B, 3, T, H, W)"
SCORES = ("fitness", "top1", "top5", "mean_ap")
RUNTIME = ("cpu_ms", "cpu_device", "gpu_ms", "gpu_device")


def base_card(name: str, info: ModelInfo) -> dict[str, Any]:
    """The sections every card has: input, output and the counted cost."""
    cost = count_cost(info.genome, info.num_classes)
    return {
        "schema": CARD_SCHEMA,
        "name": name,
        "genome_id": info.genome.id,
        "input": input_section(info.clip),
        "output": {
            "kind": "logits",
            "activation": "sigmoid per class" if info.multi_label else "softmax",
            "num_classes": info.num_classes,
            "classes": list(info.classes),
            "multi_label": info.multi_label,
        },
        "cost": {"params": cost.params, "flops": cost.flops, "memory_mb": None},
    }


def input_section(clip: ClipSpec) -> dict[str, Any]:
    n = clip.normalization
    return {
        "layout": LAYOUT,
        "shape": [None, 3, clip.num_frames, clip.resolution, clip.resolution],
        "dtype": "float32",
        "channels": "RGB",
        "num_frames": clip.num_frames,
        "frame_stride": clip.frame_stride,
        "resolution": clip.resolution,
        "normalization": {"mean": list(n.mean), "std": list(n.std)},
        "formula": "x = (pixel / 255 - mean) / std, per channel",
        "sampling": "num_frames frames, every frame_stride-th, centred in the video; the centre "
        "square of each frame resized to resolution x resolution",
    }


def candidate_card(
    name: str,
    info: ModelInfo,
    run_dir: Path,
    frame: pd.DataFrame,
    candidate_id: int,
    config: RunConfig,
) -> dict[str, Any]:
    """The card of one candidate of a run: ``base_card`` and what the lineage and recipe say."""
    row = frame.loc[frame["candidate_id"] == candidate_id].iloc[0]
    card = base_card(name, info)
    card["cost"]["memory_mb"] = plain(row["memory_mb"])
    return {
        **card,
        "source": {
            "run": str(run_dir.resolve()),
            "run_id": str(row["run_id"]),
            "candidate_id": candidate_id,
            "strategy": str(row["strategy"]),
        },
        "runtime": {k: plain(row[k]) for k in RUNTIME} | measured_file(config.profiler.runtime),
        "scores": {k: plain(row[k]) for k in SCORES},
        # ``iterations``: what this candidate trained, fewer than the recipe's where
        # multi-fidelity training stopped it at a rung.
        "training": {**training_section(config), "iterations": plain(row["iterations"])},
        "lineage": lineage_section(frame, candidate_id),
    }


def measured_file(runtime: str) -> dict[str, str]:
    """Which runtime the card's latencies were measured in, and the file of the export that
    runtime runs (the file the profiler timed was written by the same function)."""
    file_name = RUNTIMES[runtime].file_name or "weights.safetensors"
    return {"runtime": runtime, "file": file_name}


def training_section(config: RunConfig) -> dict[str, Any]:
    s = config.search
    return {
        "train": dataclasses.asdict(config.train),
        "data": dataclasses.asdict(config.data),
        "search": {"strategy": s.strategy, "budget": s.budget, "seed": s.seed},
    }


def lineage_section(frame: pd.DataFrame, candidate_id: int) -> list[dict[str, Any]]:
    """The ancestry, the first sampled genome first, one step per mutation."""
    rows = ancestors(frame, candidate_id).iloc[::-1]
    keys = ("candidate_id", "parent_id", "mutation", "genome_id", "status", "fitness")
    return [{k: plain(r[k]) for k in keys} for _, r in rows.iterrows()]


def plain(value: Any) -> Any:
    """A pandas or numpy scalar as a JSON value (missing: None)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def render_markdown(card: Mapping[str, Any]) -> str:
    parts = [
        _heading(card),
        _input_text(card["input"]),
        _output_text(card["output"]),
        _cost_text(card),
        _scores_text(card),
        _training_text(card),
        _lineage_text(card.get("lineage") or []),
        _files_text(card),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _heading(card: Mapping[str, Any]) -> str:
    lines = [f"# {card['name']}", ""]
    src, again = card.get("source"), card.get("retrained")
    if src:
        lines.append(
            f"Tiny Video Network found by the `{src['strategy']}` search: candidate "
            f"{src['candidate_id']} of run `{src['run_id']}` (genome `{card['genome_id']}`)."
        )
    else:
        lines.append(f"Tiny Video Network, genome `{card['genome_id']}`.")
    if again:
        lines.append(
            f"Trained by `tvnsearch train` for {again['iterations']} iterations, from "
            f"`{again['from']}`."
        )
    return "\n".join(lines)


def _input_text(i: Mapping[str, Any]) -> str:
    n = i["normalization"]
    shape = f"(B, 3, {i['num_frames']}, {i['resolution']}, {i['resolution']})"
    return "\n".join(
        [
            "## Input",
            "",
            f"- tensor: {i['dtype']} {i['layout']} = {shape}, {i['channels']}",
            f"- clip: {i['num_frames']} frames, {_every(i['frame_stride'])} "
            f"of the video, {i['resolution']} x {i['resolution']} pixels",
            f"- normalisation: {i['formula']}; mean {n['mean']}, std {n['std']}",
            f"- sampling: {i['sampling']}",
        ]
    )


def _every(n: int) -> str:
    """``every frame``, ``every 2nd frame``, ..."""
    return (
        "every frame"
        if n == 1
        else f"every {n}{'nd' if n == 2 else 'rd' if n == 3 else 'th'} frame"
    )


def _output_text(o: Mapping[str, Any]) -> str:
    classes = ", ".join(f"`{c}`" for c in o["classes"])
    head = f"Logits over {o['num_classes']} classes ({o['activation']}), in this order:"
    return f"## Output\n\n{head} {classes}."


def _cost_text(card: Mapping[str, Any]) -> str:
    cost, runtime = card["cost"], card.get("runtime") or {}
    memory = cost["memory_mb"]
    rows = [
        ("parameters", f"{cost['params']:,}"),
        ("FLOPs per clip", f"{cost['flops']:,}"),
        ("peak memory", "not measured" if memory is None else f"{memory:.2f} MB"),
    ]
    measured_in = ""
    if runtime.get("runtime"):  # cards from before runtimes were chosen have none
        measured_in = f", in {runtime['runtime']}: the latency of `{runtime['file']}`"
    for kind in ("cpu", "gpu"):
        ms, device = runtime.get(f"{kind}_ms"), runtime.get(f"{kind}_device")
        text = "not measured" if ms is None else f"{ms:.3f} ms per clip on `{device}`{measured_in}"
        rows.append((f"{kind.upper()} runtime", text))
    return "## Cost\n\n" + _table(("measure", "value"), rows)


def _scores_text(card: Mapping[str, Any]) -> str:
    scores = card.get("scores")
    if not scores:
        return ""
    cells = [_number(scores.get(k)) for k in SCORES]
    where = "validation split, after the training below"
    return f"## Scores ({where})\n\n" + _table(("fitness", "top-1", "top-5", "mAP"), [cells])


def _training_text(card: Mapping[str, Any]) -> str:
    training = card.get("training")
    if not training:
        return ""
    t, d = training["train"], training["data"]
    done = training.get("iterations") or t["iterations"]
    stopped = f" (stopped at a rung of a {t['iterations']}-iteration schedule)"
    return "\n".join(
        [
            "## Training",
            "",
            f"{done} iterations{stopped if done < t['iterations'] else ''} of batch "
            f"{t['batch_size']}, AdamW learning rate "
            f"{t['learning_rate']} (warm-up {t['warmup_fraction']}, cosine), weight decay "
            f"{t['weight_decay']}, flips {'on' if t['flip'] else 'off'}, seed {t['seed']}, "
            f"on `{d['path']}` ({d['val_fraction']} held out for validation, split seed "
            f"{d['split_seed']}).",
        ]
    )


def _lineage_text(steps: list[Mapping[str, Any]]) -> str:
    if not steps:
        return ""
    rows = [
        (str(s["candidate_id"]), s["mutation"], f"`{s['genome_id']}`", _number(s["fitness"]))
        for s in steps
    ]
    head = "## Lineage (first ancestor first)\n\n"
    return head + _table(("candidate", "mutation", "genome", "fitness"), rows)


def _files_text(card: Mapping[str, Any]) -> str:
    lines = ["## Files", ""] + [f"- `{name}`: {what}" for name, what in card["files"].items()]
    tvn = card["tvn_format"]
    if not tvn["fits"]:
        lines.append(f"- no `tvn.json`: the published TVN format cannot express {tvn['why_not']}")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _table(head: tuple[str, ...], rows: list) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    # A device signature has "|" in it, which would end a table cell.
    cells = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])
