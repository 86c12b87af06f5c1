"""Export of a real search's networks, and training them again, through the command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from genomes import block
from genomes import genome as make_genome
from safetensors.torch import load_file

from tvnsearch.cli.main import main
from tvnsearch.data.clips import ClipSpec, Normalization
from tvnsearch.export.folders import write_export
from tvnsearch.export.model_card import base_card
from tvnsearch.genome.tvn_format import fits_tvn_format, load_genome
from tvnsearch.inspect.pareto import pareto_front
from tvnsearch.measure.runtimes import RUNTIMES
from tvnsearch.models.builder import build_model
from tvnsearch.search.lineage import ancestors, best, read_lineage
from tvnsearch.search.runs import load_run
from tvnsearch.train.weights import ModelInfo, read_weights, run_weights_path, weights_bytes

TOLERANCE = 1e-4
EXPORT_IN_A_CHILD = """
import sys
from tvnsearch.cli.main import main
code = main(sys.argv[1:])
assert "ray" not in sys.modules, "export needed Ray"
sys.exit(code)
"""
RUN_WITHOUT_TVNSEARCH = """
import sys
import numpy as np
import onnxruntime
import torch
folder, work = sys.argv[1:]
scripted = torch.jit.load(folder + "/model.ts")
session = onnxruntime.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
for n in ("1", "4"):
    clip = np.load(work + "/clip" + n + ".npy")
    with torch.no_grad():
        np.save(work + "/ts" + n + ".npy", scripted(torch.from_numpy(clip)).numpy())
    np.save(work + "/onnx" + n + ".npy", session.run(None, {"clip": clip})[0])
assert not [m for m in sys.modules if m.split(".")[0] == "tvnsearch"], "tvnsearch was imported"
"""


def export_cli(capsys, run: Path, out: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["export", str(run), "--out", str(out), *argv])
    printed, err = capsys.readouterr()
    return code, printed, err


def trained_ids(run: Path) -> list[int]:
    frame = read_lineage(run)
    return sorted(int(c) for c in frame.loc[frame["status"] == "trained", "candidate_id"])


def card_of(folder: Path) -> dict:
    return json.loads((folder / "card.json").read_text())


@pytest.fixture(scope="module")
def best_export(searched_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``export --best`` in every format, by the command line in a process of its own."""
    out = tmp_path_factory.mktemp("export")
    argv = ["export", str(searched_run), "--best", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-c", EXPORT_IN_A_CHILD, *argv],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "relative error from PyTorch: model.ts" in done.stdout and "model.onnx" in done.stdout
    (folder,) = out.iterdir()
    return folder


def test_the_best_export_holds_the_network_and_a_full_card(best_export, searched_run) -> None:
    frame = read_lineage(searched_run)
    row = best(frame, 1).iloc[0]
    assert best_export.name == f"{searched_run.name}-c{row['candidate_id']}"
    genome = load_genome(best_export / "genome.json")
    files = {"genome.json", "weights.safetensors", "model.ts", "model.onnx", "card.json"}
    files |= {"MODEL_CARD.md"} | ({"tvn.json"} if fits_tvn_format(genome) else set())
    assert {p.name for p in best_export.iterdir()} == files
    card = card_of(best_export)
    clip = ClipSpec.of(genome)
    assert card["input"]["layout"] == "(B, 3, T, H, W)"
    assert [card["input"][k] for k in ("num_frames", "frame_stride", "resolution")] == [
        clip.num_frames,
        clip.frame_stride,
        clip.resolution,
    ]
    assert card["input"]["normalization"] == {"mean": [0.45] * 3, "std": [0.225] * 3}
    assert len(card["output"]["classes"]) == 9 and card["output"]["classes"][0] == "blue_down"
    assert card["runtime"]["cpu_ms"] == row["cpu_ms"]
    assert card["runtime"]["cpu_device"] == row["cpu_device"]
    assert card["cost"] == {
        "params": row["params"],
        "flops": row["flops"],
        "memory_mb": row["memory_mb"],
    }
    assert card["scores"]["fitness"] == row["fitness"] and card["scores"]["top1"] == row["top1"]
    assert card["training"]["train"]["iterations"] == 4  # the recipe's
    assert card["training"]["iterations"] == row["iterations"] == 4  # the best trained in full
    assert card["training"]["train"]["batch_size"] == 4
    errors = card["checks"]["relative_errors"]
    assert set(errors) == {"model.ts", "model.onnx"}
    assert all(0 <= e <= TOLERANCE for e in errors.values())
    assert card["runtime"]["runtime"] == "eager"
    assert card["runtime"]["file"] == "weights.safetensors"
    text = (best_export / "MODEL_CARD.md").read_text()
    assert f"{row['cpu_ms']:.3f} ms per clip" in text and "## Lineage" in text
    assert "in eager: the latency of `weights.safetensors`" in text
    every = "every frame" if clip.frame_stride == 1 else f"every {clip.frame_stride}"
    assert f"{clip.num_frames} frames, {every}" in text


def test_exported_models_match_pytorch_in_a_process_without_tvnsearch(
    best_export, tmp_path
) -> None:
    genome = load_genome(best_export / "genome.json")
    card = card_of(best_export)
    model = build_model(genome, card["output"]["num_classes"]).eval()
    model.load_state_dict(load_file(best_export / "weights.safetensors"))
    norm = Normalization(*(tuple(card["input"]["normalization"][k]) for k in ("mean", "std")))
    generator = torch.Generator().manual_seed(7)
    expected = {}
    for n in (1, 4):
        shape = (n, 3, genome.num_frames, genome.resolution, genome.resolution)
        clip = norm.apply(torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator))
        np.save(tmp_path / f"clip{n}.npy", clip.numpy())
        with torch.no_grad():
            expected[n] = model(clip).numpy()
    done = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_TVNSEARCH, str(best_export), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for n in (1, 4):
        for kind in ("ts", "onnx"):
            got = np.load(tmp_path / f"{kind}{n}.npy")
            assert got.shape == expected[n].shape
            assert np.abs(got - expected[n]).max() <= TOLERANCE, (kind, n)


def test_the_exported_weights_are_the_runs_and_load_into_the_genome(
    best_export, searched_run
) -> None:
    candidate_id = int(best_export.name.rsplit("-c", 1)[1])
    kept = run_weights_path(searched_run, candidate_id)
    assert (best_export / "weights.safetensors").read_bytes() == kept.read_bytes()
    saved = read_weights(best_export / "weights.safetensors")
    assert saved.info.genome == load_genome(best_export / "genome.json")
    assert list(saved.info.classes) == card_of(best_export)["output"]["classes"]
    model = build_model(saved.info.genome, saved.info.num_classes)
    model.load_state_dict(saved.state, strict=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.state.items())


def test_export_by_id_writes_tvn_json_exactly_when_the_genome_fits(
    searched_run, tmp_path, capsys
) -> None:
    ids = trained_ids(searched_run)
    code, printed, _ = export_cli(
        capsys, searched_run, tmp_path, *[f"--id={i}" for i in ids], "--format", "tvn-json"
    )
    assert code == 0 and printed.count("wrote ") == len(ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{searched_run.name}-c{i}" for i in ids
    )
    assert not list(tmp_path.glob(".*"))  # no hidden folder left behind
    frame = read_lineage(searched_run)
    for folder in tmp_path.iterdir():
        steps = card_of(folder)["lineage"]
        chain = ancestors(frame, int(folder.name.rsplit("-c", 1)[1])).iloc[::-1]
        assert [s["candidate_id"] for s in steps] == list(chain["candidate_id"])
        assert [s["mutation"] for s in steps] == list(chain["mutation"])
        genome = load_genome(folder / "genome.json")
        fits = fits_tvn_format(genome)
        assert (folder / "tvn.json").exists() == fits == card_of(folder)["tvn_format"]["fits"]
        assert not (folder / "model.ts").exists() and not (folder / "model.onnx").exists()
        if fits:
            assert load_genome(folder / "tvn.json") == genome
        else:
            assert "no `tvn.json`" in (folder / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize("act", ["relu", "swish"])
def test_tvn_json_is_written_only_for_a_genome_the_format_expresses(tmp_path, act) -> None:
    genome = make_genome(block(act=act))
    model = build_model(genome, 2).eval()
    info = ModelInfo(genome, ClipSpec.of(genome), ("a", "b"))
    weights = weights_bytes(model, info)
    folder = tmp_path / "x"
    write_export(folder, weights, model, info, base_card("x", info), ("tvn-json",))
    why_not = card_of(folder)["tvn_format"]["why_not"]
    if act == "relu":
        assert (folder / "tvn.json").exists() and why_not is None
    else:
        assert not (folder / "tvn.json").exists() and "blocks[0].act" in why_not
    assert "## Lineage" not in (folder / "MODEL_CARD.md").read_text()  # no run, no lineage


STREAM_WITHOUT_TVNSEARCH = """
import sys
import numpy as np
import torch
folder, work = sys.argv[1:]
stream = torch.jit.load(folder + "/stream.ts")
clip = torch.from_numpy(np.load(work + "/clip.npy"))
state = stream.initial_state(clip.shape[0])
with torch.no_grad():
    for frame in clip.unbind(2):
        _, state = stream(frame, state)
    np.save(work + "/stream.npy", stream.clip_logits(state).numpy())
assert not [m for m in sys.modules if m.split(".")[0] == "tvnsearch"], "tvnsearch was imported"
"""


def test_a_pipelined_network_also_exports_its_frame_by_frame_step(tmp_path) -> None:
    genome = make_genome(block(temporal_kernel=2, num_repeats=2), num_frames=4, pipeline_depth=1)
    model = build_model(genome, 3).eval()
    info = ModelInfo(genome, ClipSpec.of(genome), ("a", "b", "c"))
    folder = tmp_path / "x"
    card = base_card("x", info)
    write_export(folder, weights_bytes(model, info), model, info, card, ("torchscript",))
    assert card_of(folder)["checks"]["relative_errors"]["stream.ts"] < TOLERANCE
    clip = torch.randn(2, 3, 4, genome.resolution, genome.resolution)
    np.save(tmp_path / "clip.npy", clip.numpy())
    child = [sys.executable, "-c", STREAM_WITHOUT_TVNSEARCH, str(folder), str(tmp_path)]
    done = subprocess.run(child, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with torch.no_grad():
        expected = model(clip).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "stream.npy"), expected, atol=TOLERANCE)


@pytest.mark.parametrize("axes", [(), ("--x", "params", "--y", "top5")])
def test_export_pareto_writes_the_front(searched_run, tmp_path, capsys, axes) -> None:
    code, _, err = export_cli(
        capsys, searched_run, tmp_path, "--pareto", *axes, "--format=tvn-json"
    )
    assert code == 0, err
    x, y = (axes[1], axes[3]) if axes else ("cpu_ms", "fitness")
    front = pareto_front(read_lineage(searched_run), objectives=(y, x))
    assert len(front) and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{searched_run.name}-c{i}" for i in front["candidate_id"]
    )


def test_export_pareto_skips_the_folders_it_exported_before(searched_run, tmp_path, capsys) -> None:
    """The front of a run that went on: what an earlier export wrote stays as it is, named as
    skipped, and the other networks of the front are exported."""
    axes = ("--pareto", "--x", "params", "--format=tvn-json")
    assert export_cli(capsys, searched_run, tmp_path, *axes)[0] == 0
    folders = sorted(tmp_path.iterdir())
    assert len(folders) >= 2, "the fixture's front over params and fitness has one network"
    kept, *gone = folders
    before = {p.name: p.stat().st_mtime_ns for p in kept.iterdir()}
    for folder in gone:
        shutil.rmtree(folder)
    code, printed, err = export_cli(capsys, searched_run, tmp_path, *axes)
    assert code == 0 and err == ""
    assert f"skipped {kept}: exists (remove it to export again)" in printed.splitlines()
    assert [f"wrote {g}" in printed for g in gone] == [True] * len(gone)
    assert sorted(tmp_path.iterdir()) == folders
    assert {p.name: p.stat().st_mtime_ns for p in kept.iterdir()} == before


def first_id(run: Path, status: str) -> int:
    frame = read_lineage(run)
    rows = frame[frame["status"] == status]
    assert len(rows), f"the fixture search has no {status} candidate"
    return int(rows["candidate_id"].iloc[0])


@pytest.mark.parametrize(
    "case",
    ["rejected", "unknown id", "one bad of two", "format", "not a run", "axis", "not kept", "swap"],
)
def test_bad_input_exits_2_and_writes_nothing(searched_run, tmp_path, capsys, case) -> None:
    run, out = searched_run, tmp_path / "out"
    rejected, trained = first_id(run, "rejected"), first_id(run, "trained")
    if case in ("not kept", "swap"):
        run = tmp_path / searched_run.name
        shutil.copytree(searched_run, run)
    if case == "not kept":  # as a run with search.keep_weights = false
        shutil.rmtree(run / "weights")
    other = next(i for i in trained_ids(run) if i != trained)
    if case == "swap":  # another candidate's weights under this one's name
        shutil.copyfile(run_weights_path(run, other), run_weights_path(run, trained))
    argv, expected = {
        "rejected": ([f"--id={rejected}"], f"candidate {rejected}: rejected ("),
        "unknown id": (["--id=999"], "candidate 999: not in the lineage"),
        "one bad of two": ([f"--id={trained}", f"--id={rejected}"], f"candidate {rejected}"),
        "format": (["--best", "--format=onnx,pdf"], "--format: must be"),
        "not a run": (["--best"], "not a run folder"),
        "axis": (["--pareto", "--x=speed"], "--x: must be one of"),
        "not kept": (["--best"], "its weights were not kept"),
        "swap": ([f"--id={trained}"], f"but candidate {trained} is genome"),
    }[case]
    if case == "not a run":
        run = tmp_path / "nowhere"
    code, printed, err = export_cli(capsys, run, out, *argv)
    assert code == 2 and printed == "" and not out.exists()
    assert err.startswith("tvnsearch export: ") and expected in err and err.count("\n") == 1


def test_export_never_replaces_a_folder(searched_run, tmp_path, capsys) -> None:
    assert export_cli(capsys, searched_run, tmp_path, "--best", "--format=tvn-json")[0] == 0
    (folder,) = tmp_path.iterdir()
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code, _, err = export_cli(capsys, searched_run, tmp_path, "--best", "--format=tvn-json")
    assert code == 2 and "already exists" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_export_goes_into_the_run_folder_without_out(searched_run, tmp_path, capsys) -> None:
    run = tmp_path / searched_run.name
    shutil.copytree(searched_run, run)
    assert main(["export", str(run), "--best", "--format", "tvn-json"]) == 0
    (folder,) = (run / "exports").iterdir()
    assert f"wrote {folder}" in capsys.readouterr().out and (folder / "genome.json").is_file()


def test_train_retrains_an_export_into_a_new_export_folder(best_export, tmp_path, capsys) -> None:
    source = {p.name: p.read_bytes() for p in best_export.iterdir()}
    out = tmp_path / "longer"
    argv = ["train", str(best_export), "--iterations", "4", "--out", str(out), "--json"]
    code = main([*argv, "--format", "tvn-json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["status"] == "trained" and result["iterations"] == 4
    assert result["out"] == str(out)
    assert (out / "genome.json").read_text() == (best_export / "genome.json").read_text()
    assert read_weights(out / "weights.safetensors").info.genome.id == result["id"]
    card, old = card_of(out), card_of(best_export)
    assert card["retrained"]["from"] == str(best_export.resolve())
    assert card["scores"]["fitness"] == result["fitness"]
    assert card["training"]["train"]["iterations"] == 4
    assert card["training"]["train"]["batch_size"] == 4  # the run's recipe, not the default
    assert card["training"]["data"] == old["training"]["data"]  # the run's data, split, cache
    assert card["lineage"] == old["lineage"] and card["runtime"] == old["runtime"]
    assert main(["train", str(best_export), "--iterations", "1", "--out", str(best_export)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in best_export.iterdir()} == source


@pytest.mark.parametrize("damage", ["clip", "card"])
def test_train_refuses_an_export_whose_card_is_damaged(best_export, tmp_path, capsys, damage):
    folder = tmp_path / "copy"
    shutil.copytree(best_export, folder)
    card = card_of(folder)
    if damage == "clip":
        card["input"]["num_frames"] += 1
        (folder / "card.json").write_text(json.dumps(card))
    else:
        (folder / "card.json").unlink()
    code = main(["train", str(folder), "--iterations", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "o").exists()
    assert ("card.json: input: the clip" if damage == "clip" else "card.json: cannot read") in err


def test_train_a_genome_json_into_an_export_folder(searched_run, tmp_path, capsys) -> None:
    genome = make_genome(block(spatial_stride=2))
    path = tmp_path / "g.json"
    path.write_text(genome.to_json())
    data = load_run(searched_run).data
    out = tmp_path / "trained"
    argv = [str(path), "--data", data.path, "--cache-dir", data.cache_dir, "--cache-size", "32"]
    code = main(["train", *argv, "--iterations", "2", "--out", str(out), "--format=tvn-json"])
    printed = capsys.readouterr().out
    assert code == 0 and f"wrote {out}" in printed
    card = card_of(out)
    assert "lineage" not in card and card["training"]["train"]["batch_size"] == 16
    assert (out / "tvn.json").exists() and card["retrained"]["from"] == str(path.resolve())
    assert pd.notna(card["scores"]["fitness"])


def test_export_writes_each_file_with_the_writer_the_profiler_times(monkeypatch, tmp_path) -> None:
    """One writer per file: what ``tvnsearch export`` writes is what a search measured."""
    import dataclasses

    from tvnsearch.measure.measurement import measure
    from tvnsearch.measure.profile import Settings

    written: list[str] = []
    onnx = RUNTIMES["onnxruntime"]

    def spy(model, example, path):
        written.append(f"{path.name} {tuple(example.shape)}")
        onnx.writer(model, example, path)

    monkeypatch.setitem(RUNTIMES, "onnxruntime", dataclasses.replace(onnx, writer=spy))
    genome = make_genome(block(num_filters=4), num_frames=2, resolution=16)
    measure(genome, 3, Settings(runtime="onnxruntime", warmup=3, runs=1, min_seconds=0))
    model = build_model(genome, 3).eval()
    info = ModelInfo(genome, ClipSpec.of(genome), ("a", "b", "c"))
    card = base_card("x", info)
    write_export(tmp_path / "x", weights_bytes(model, info), model, info, card, ("onnx",))
    assert written == ["model.onnx (2, 3, 2, 16, 16)"] * 2  # the same example, too


@pytest.mark.skipif(
    RUNTIMES["executorch"].missing("cpu") is not None, reason="an optional extra: make executorch"
)
def test_an_executorch_export_runs_in_executorch_where_it_is_installed(tmp_path) -> None:
    genome = make_genome(block(num_filters=4, temporal_kernel=3), num_frames=4, resolution=16)
    model = build_model(genome, 3).eval()
    info = ModelInfo(genome, ClipSpec.of(genome), ("a", "b", "c"))
    card = base_card("x", info)
    done = write_export(
        tmp_path / "x", weights_bytes(model, info), model, info, card, ("executorch",)
    )
    assert "model.pte" in done.files and done.errors["model.pte"] < TOLERANCE
    forward = RUNTIMES["executorch"].load(tmp_path / "x" / "model.pte", "cpu", 1)
    clip = torch.randn(1, 3, 4, 16, 16)
    with torch.inference_mode():
        assert (
            float((forward(clip) - model(clip)).abs().max())
            <= 1e-4 * float(model(clip).abs().max()) + 1e-6
        )
