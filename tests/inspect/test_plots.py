from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tvnsearch.errors import InputError
from tvnsearch.genome.genes import describe_block, genome_from_dict
from tvnsearch.inspect.figures import axis_label, hover_text, progress_table
from tvnsearch.inspect.hypervolume import Reference, describe_reference, reference_for
from tvnsearch.inspect.pareto import candidates, pareto_front
from tvnsearch.inspect.plots import write_pareto_plot, write_progress_plot
from tvnsearch.search.lineage import read_lineage

OBJECTIVE_SETS = [("cpu_ms", "fitness"), ("params", "fitness", "cpu_ms")]


@pytest.fixture(scope="module")
def frame(searched_run: Path) -> pd.DataFrame:
    return read_lineage(searched_run)


def decoded_html(path: Path) -> str:
    """The page with the escapes plotly writes into its JSON undone (<, >, /, &)."""
    html = path.read_text()
    for escape, char in (("\\u003c", "<"), ("\\u003e", ">"), ("\\u002f", "/"), ("\\u0026", "&")):
        html = html.replace(escape, char)
    return html


def assert_real_png(path: Path) -> None:
    import matplotlib.image

    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert width >= 800 and height >= 500, image.shape
    assert image[..., :3].std() > 0.05  # drawn on, not a blank canvas


def assert_self_contained(html: str) -> None:
    assert re.search(r"<script[^>]*\bsrc=", html) is None  # nothing fetched: plotly.js inlined
    assert "Plotly.newPlot" in html and len(html) > 1_000_000


@pytest.mark.parametrize("objectives", OBJECTIVE_SETS)
def test_pareto_png_is_a_real_image(frame, objectives, tmp_path) -> None:
    path = write_pareto_plot(frame, objectives, tmp_path / "pareto.png")
    assert_real_png(path)


@pytest.mark.parametrize("objectives", OBJECTIVE_SETS)
def test_pareto_html_hovers_every_trained_candidate(frame, objectives, tmp_path) -> None:
    html = decoded_html(write_pareto_plot(frame, objectives, tmp_path / "pareto.html"))
    assert_self_contained(html)
    rows = candidates(frame, objectives)
    assert len(rows) >= 2
    for _, row in rows.iterrows():
        assert hover_text(row) in html
    for _, row in frame[~frame["candidate_id"].isin(rows["candidate_id"])].iterrows():
        assert f"candidate {row['candidate_id']}<" not in html  # rejected: not plotted
    assert all(axis_label(name, frame) in html for name in objectives)


def test_hover_text_shows_genome_and_measurements(frame) -> None:
    row = candidates(frame, ("fitness", "cpu_ms")).iloc[0]
    genome = genome_from_dict(json.loads(row["genome_json"]))
    text = hover_text(row)
    lines = text.split("<br>")
    assert lines[0] == f"<b>candidate {row['candidate_id']}</b> (genome {row['genome_id']})"
    assert lines[1].startswith(f"{genome.resolution}x{genome.resolution} px, ")
    assert f"{genome.num_frames} frames, frame stride {genome.frame_stride}" in lines[1]
    for i, block in enumerate(genome.blocks):
        assert f"block {i}: {describe_block(block)}" in lines
    assert f"fitness {row['fitness']:.4f} (top-1 {row['top1']:.4f}, top-5" in text
    assert f"cpu_ms {row['cpu_ms']:.3f} on {row['cpu_device']}" in text
    assert f"params {row['params']:,}, FLOPs {row['flops']:,}" in text
    assert f"memory {row['memory_mb']:.2f} MiB" in text


def test_axis_labels_carry_units(frame) -> None:
    # The runtime a time was measured in is part of its axis (the searched run: PyTorch eager).
    assert axis_label("cpu_ms", frame) == "CPU runtime per clip (ms), PyTorch eager"
    assert axis_label("flops", frame) == "FLOPs per clip"
    assert axis_label("fitness", frame) == "fitness (top-1 + top-5)"
    multi_label = frame.assign(mean_ap=pd.array([0.5] * len(frame), dtype="Float64"))
    assert axis_label("fitness", multi_label) == "fitness (mean average precision)"


@pytest.mark.parametrize("objectives", OBJECTIVE_SETS)
def test_title_counts_the_front_and_names_the_device(frame, objectives, tmp_path) -> None:
    html = decoded_html(write_pareto_plot(frame, objectives, tmp_path / "p.html"))
    num_trained = len(candidates(frame, objectives))
    num_front = len(pareto_front(frame, objectives))
    assert f"{num_trained} trained candidates, {num_front} non-dominated" in html
    (device,) = frame["cpu_device"].dropna().unique()
    assert f"cpu_ms measured on {device}" in html


def test_three_objectives_colour_by_the_third(frame, tmp_path) -> None:
    html = decoded_html(
        write_pareto_plot(frame, ("cpu_ms", "fitness", "params"), tmp_path / "p.html")
    )
    colour_axis = re.search(r'"coloraxis":\{"colorbar":\{"title":\{"text":"([^"]+)"', html)
    assert colour_axis is not None and colour_axis.group(1) == "parameters"
    assert '"symbol":"diamond"' in html  # the front stands out by shape, not colour


def test_progress_plots(frame, tmp_path) -> None:
    assert_real_png(write_progress_plot(frame, tmp_path / "progress.png"))
    html = decoded_html(write_progress_plot(frame, tmp_path / "progress.html"))
    assert_self_contained(html)
    assert "candidates evaluated (in the order told)" in html
    assert "share rejected so far (%)" in html
    assert "hypervolume so far" in html
    assert f"below: hypervolume over {describe_reference(reference_for(frame))}" in html


def test_progress_table_follows_the_order_told() -> None:
    frame = pd.DataFrame(
        {
            "candidate_id": pd.array([1, 0, 2, 3, 4], dtype="Int64"),
            "num_asked_at_tell": pd.array([3, 2, 4, 5, 5], dtype="Int64"),
            "status": pd.array(["trained", "rejected", "failed", "trained", "rejected"]),
            "fitness": pd.array([1.2, None, None, 1.0, None], dtype="Float64"),
            "cpu_ms": pd.array([2.0, 0.5, None, 1.0, 0.5], dtype="Float64"),
        }
    ).iloc[[4, 0, 1, 3, 2]]  # shuffled: the table sorts by num_asked_at_tell, stably
    table = progress_table(frame)
    assert table["candidate_id"].tolist() == [0, 1, 2, 4, 3]
    assert table["told"].tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(table["best_fitness"], [np.nan, 1.2, 1.2, 1.2, 1.2])
    np.testing.assert_allclose(table["rejected_share"], [1, 1 / 2, 1 / 3, 2 / 4, 2 / 5])
    np.testing.assert_array_equal(table["fitness"], [np.nan, 1.2, np.nan, np.nan, 1.0])
    # Fitness from 0 and cpu_ms from 2.2 (10 % beyond the slowest trained): candidate 1 covers
    # 1.2 x 0.2, candidate 3 adds 1.0 x 1.0 below it. Rejected rows count for nothing.
    np.testing.assert_allclose(table["hypervolume"], [0, 0.24, 0.24, 0.24, 1.24])
    given = Reference(("fitness", "cpu_ms"), (0.0, 3.0), ("", ""))
    assert progress_table(frame, given)["hypervolume"].iloc[-1] == pytest.approx(1.2 + 1.0)


def test_a_plot_must_be_png_or_html(frame, tmp_path) -> None:
    with pytest.raises(InputError, match=r"must end in \.png or \.html"):
        write_pareto_plot(frame, ("cpu_ms", "fitness"), tmp_path / "pareto.svg")
    assert not list(tmp_path.iterdir())


def test_the_share_rejected_has_room_beyond_0_and_100_percent(frame, tmp_path, monkeypatch) -> None:
    """A search's first candidates are often all rejected: at 100 % the line must not lie on
    the frame's border, where it cannot be seen."""
    import tvnsearch.inspect.plots as plots

    figures = []
    monkeypatch.setattr(plots, "_write_png", lambda path, fig: figures.append(fig))
    write_progress_plot(frame, tmp_path / "progress.png")
    (share,) = [a for a in figures[0].axes if a.get_ylabel() == "share rejected so far (%)"]
    low, high = share.get_ylim()
    assert low < 0 and high > 100
    html = decoded_html(write_progress_plot(frame, tmp_path / "progress.html"))
    (shown,) = re.findall(r'"yaxis2":\{.*?"range":\[([-\d.]+),([-\d.]+)\]', html)
    assert float(shown[0]) < 0 and float(shown[1]) > 100
