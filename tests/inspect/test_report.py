from __future__ import annotations

import html
import math
import re
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from browser import CHROMIUM, dom
from plotly.offline import get_plotlyjs
from test_plots import decoded_html as page
from test_summary import TINY, config, lineage, record

from tvnsearch.errors import InputError
from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.space import load_space
from tvnsearch.inspect.hypervolume import in_told_order
from tvnsearch.inspect.lineage_tree import (
    ANCESTRY_SCRIPT,
    MAX_EDGE_LABELS,
    SELECTED,
    TRAINED,
    TRAINED_EDGES,
    lineage_figure,
)
from tvnsearch.inspect.report import REPORT_FILE, STALE_SECONDS, write_report
from tvnsearch.inspect.summary import facts, summarize
from tvnsearch.measure.constraints import Constraints
from tvnsearch.measure.gate import Gate
from tvnsearch.search.engine import Engine
from tvnsearch.search.evolution import Evolution
from tvnsearch.search.inline import InlineExecutor
from tvnsearch.search.lineage import LineageWriter, ancestors, best, read_lineage
from tvnsearch.search.progress import Tally
from tvnsearch.search.runs import load_run, save_run_log
from tvnsearch.search.worker import Evaluation, Job
from tvnsearch.status import Status

NUM_CLASSES = 9
ENGINE_CONSTRAINTS = Constraints(max_params=40_000)  # rejects some of the tiny space's networks
SECTIONS = ("Progress", "Pareto front", "Lineage", "Rejected", "Failed:", "The gate's costs")


def evaluate(job: Job, task: object) -> Evaluation:
    """Fitness that rises smoothly with a network's FLOPs, so that evolution climbs; one network
    in about 30 fails, with a story."""
    if int(job.genome.id[:6], 16) % 31 == 0:
        return Evaluation(Status.FAILED, reason="diverged: loss is NaN", log="step 3: loss nan\n")
    fitness = 1.6 * (1 - math.exp(-count_cost(job.genome, NUM_CLASSES).flops / 3e7))
    return Evaluation(Status.TRAINED, fitness=fitness, top1=fitness / 2, train_seconds=2.0)


@pytest.fixture(scope="module")
def evolved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of 700 candidates from the real engine (evolution, the tiny space, a gate
    that counts parameters) with ``evaluate`` in place of training."""
    run_dir = tmp_path_factory.mktemp("evolved")
    strategy = Evolution(load_space(TINY), seed=0, initial_size=70, tournament_size=7)
    gate = Gate(ENGINE_CONSTRAINTS, num_classes=NUM_CLASSES)
    with LineageWriter(run_dir) as writer:
        save_log = partial(save_run_log, run_dir)
        executor = InlineExecutor(evaluate)
        tally = Tally(700)
        Engine(strategy, gate, executor, writer, "evolved", tally, save_log=save_log).run()
    return run_dir


@pytest.fixture(scope="module")
def evolved_frame(evolved: Path) -> pd.DataFrame:
    return read_lineage(evolved)


def trace(fig, name: str):
    (found,) = [t for t in fig.data if t.name == name]
    return found


def group(fig, name: str) -> SimpleNamespace:
    """The traces of a legend group (the trained nodes or their edges, a trace per family) as
    one: their points in order, and their names."""
    traces = [t for t in fig.data if t.legendgroup == name]
    assert traces, name

    def joined(field: str) -> list:
        return [
            v for t in traces for v in (getattr(t, field) if getattr(t, field) is not None else [])
        ]

    fields = ("x", "y", "customdata", "hovertext")
    return SimpleNamespace(**{f: joined(f) for f in fields}, names=[t.name for t in traces])


def edges_of(fig, frame: pd.DataFrame) -> dict[tuple[int, int], bool]:
    """(parent id, child id) of every edge drawn, mapped to whether it is faint."""
    ids = in_told_order(frame)["candidate_id"].to_numpy()
    drawn = {}
    for x, faint in (
        (group(fig, TRAINED_EDGES).x, False),
        (trace(fig, "edge to a child without fitness").x, True),
    ):
        ends = np.asarray(x, dtype=np.float64).reshape(-1, 3)
        assert np.isnan(ends[:, 2]).all()  # a gap after each edge: one line, many edges
        pairs = [(int(ids[int(a) - 1]), int(ids[int(b) - 1])) for a, b in ends[:, :2]]
        assert not set(pairs) & set(drawn)
        drawn |= dict.fromkeys(pairs, faint)
    return drawn


def assert_self_contained(text: str) -> None:
    assert re.search(r"<script[^>]*\bsrc=", text) is None
    assert "<link" not in text and "@import" not in text and "url(http" not in text
    assert text.count(get_plotlyjs()[:2000]) == 1  # plotly.js inlined, once


def test_the_searched_runs_report(searched_run: Path, tmp_path) -> None:
    frame, run = read_lineage(searched_run), load_run(searched_run)
    path = write_report(frame, run, tmp_path / REPORT_FILE, live=False)
    text = page(path)
    assert_self_contained(text)
    assert all(re.search(f"<h2[^>]*>{s}</h2>|<h3>{s}", text) for s in SECTIONS)
    for anchor in ("progress", "pareto", "lineage", "rejected", "gate"):  # to link or scroll to
        assert f'<h2 id="{anchor}">' in text
    assert text.count("Plotly.newPlot") == 4  # progress, front, lineage, the gate's costs
    assert '<span id="state">complete</span>' in text
    for label, fact in facts(summarize(frame, run)):
        assert f"<tr><th>{label}</th><td>{html.escape(fact)}</td></tr>" in text
    for ident in best(frame, 5)["candidate_id"]:
        assert f'<td class="number">{ident}</td>' in text  # in the table of the best
    assert "location.reload" not in text


def test_the_lineage_tree_draws_every_parent_link(searched_run: Path, evolved_frame) -> None:
    for frame in (read_lineage(searched_run), evolved_frame):
        fig = lineage_figure(frame)
        children = frame[frame["parent_id"].notna()]
        expected = {
            (int(p), int(c)): s != "trained"
            for p, c, s in zip(
                *(children[n] for n in ("parent_id", "candidate_id", "status")), strict=True
            )
        }
        assert edges_of(fig, frame) == expected
        links = fig.layout.meta
        parents = dict(zip(frame["candidate_id"], frame["parent_id"].fillna(-1), strict=True))
        assert links["parent"] == [parents[i] for i in links["ids"]]


def test_children_without_fitness_are_faint_at_their_parents(tmp_path) -> None:
    frame = lineage(
        tmp_path,
        [
            record(0, fitness=0.8),
            record(1, status="rejected", reason="max_params: 9 (counted) > limit 1"),
            record(2, 0, status="rejected", reason="max_cpu_ms: 63.2 (measured) > limit 50"),
            record(3, 0, status="failed", reason="diverged"),
            record(4, 0, fitness=0.9),
            record(5, 4, status="duplicate", fitness=0.9),
        ],
    )
    fig = lineage_figure(frame)
    assert group(fig, TRAINED).customdata == [0, 4]
    for status, ident, y in (("rejected", 2, 0.8), ("failed", 3, 0.8), ("duplicate", 5, 0.9)):
        faint = trace(fig, status)
        assert faint.customdata.tolist() == [ident] and faint.y.tolist() == [y]
        assert faint.marker.opacity < 0.5
    assert edges_of(fig, frame) == {(0, 2): True, (0, 3): True, (0, 4): False, (4, 5): True}
    assert trace(fig, "edge to a child without fitness").line.dash == "dot"
    # Sampled and rejected: no node, but counted.
    assert (
        "6 candidates" in fig.layout.title.text and "not drawn: 1 sampled" in fig.layout.title.text
    )
    assert 1 not in set(fig.layout.meta["ids"])
    hovers = trace(fig, "mutation").hovertext.tolist()
    assert "#0 → #4: resolution: 4" in hovers and len(hovers) == 4
    assert "parent #0, mutation resolution: 4" in group(fig, TRAINED).hovertext[1]


def test_edges_are_labelled_when_few_else_on_the_best_ancestry(evolved_frame, tmp_path) -> None:
    few = lineage(tmp_path, [record(0), record(1, 0), record(2, 1), record(3, 0)])
    labels = trace(lineage_figure(few), "mutation (label)").text
    assert sorted(labels) == ["resolution: 1", "resolution: 2", "resolution: 3"]
    fig = lineage_figure(evolved_frame)
    assert len(trace(fig, "mutation").x) > MAX_EDGE_LABELS
    chain = ancestors(evolved_frame, int(best(evolved_frame, 1).at[0, "candidate_id"]))
    assert len(chain) >= 3  # the best was bred
    labels = list(trace(fig, "mutation (label)").text)  # in the order told: the best last
    assert labels == [html.escape(m) for m in chain["mutation"].tolist()[-2::-1]]
    bold = trace(fig, "best ancestry")
    assert len(bold.x) == len(chain) and bold.line.width >= 3
    assert len(trace(fig, SELECTED).x) == 0  # until a click


def test_a_click_selects_an_ancestry(evolved, evolved_frame, tmp_path) -> None:
    text = page(write_report(evolved_frame, config(700), tmp_path / REPORT_FILE, live=False))
    (div,) = re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', text)[2:3]
    assert ANCESTRY_SCRIPT.replace("{plot_id}", div).strip() in text


def test_failures_link_their_logs(evolved, evolved_frame) -> None:
    failed = evolved_frame[evolved_frame["status"] == "failed"]
    assert len(failed) >= 1 and failed["log"].notna().all()
    path = write_report(evolved_frame, config(700), evolved / REPORT_FILE, live=False)
    text = page(path)
    assert f"<h3>Failed: {len(failed)}</h3>" in text
    for log in failed["log"]:
        assert f'<a href="{log}">' in text and (path.parent / log).is_file()


def test_rejections_are_counted_by_constraint(tmp_path) -> None:
    reasons = [
        "max_cpu_ms: 63.2 (measured) > limit 50",
        "max_cpu_ms: 80.1 (fastest probe run) > limit 50",
        "max_params: 1,234,567 (counted) > limit 200,000",
        "out of memory on cpu: cannot allocate <64 MiB>",
    ]
    records = [record(0, cpu_device="cpu|x|threads=1|torch=2", cpu_ms=5.0)]
    records += [
        record(i + 1, 0, status="rejected", reason=why, cpu_device="cpu|x|threads=1|torch=2")
        for i, why in enumerate(reasons)
    ]
    records[3] = record(3, 0, status="rejected", reason=reasons[2])  # counted: no device
    frame = lineage(tmp_path, records)
    text = page(write_report(frame, config(), tmp_path / REPORT_FILE, live=False))
    for name, count, example in (
        ("max_cpu_ms", 2, reasons[0]),
        ("max_params", 1, reasons[2]),
        ("out of memory on cpu", 1, reasons[3]),
    ):
        row = re.search(rf'<tr><td>{name}</td><td class="number">(\d+)</td>.*?</tr>', text)
        assert row is not None and int(row.group(1)) == count
        assert html.escape(example) in row.group(0)
    assert '<h3>Failed: 0</h3>\n<p class="note">None.</p>' in text
    # The gate: 1 trained and 3 rejected measured, 1 rejected by counting alone.
    number = '<td class="number">'
    assert f"<tr><td>rejected</td>{number}1</td>{number}3</td>" in text
    assert f"<tr><td>trained</td>{number}0</td>{number}1</td>" in text


def test_a_live_page_reloads_while_it_is_recent(evolved_frame, tmp_path) -> None:
    now = datetime(2025, 3, 1, 12, 34, 56, tzinfo=UTC)
    path = tmp_path / REPORT_FILE
    text = page(write_report(evolved_frame, config(700), path, live=True, updated_at=now))
    assert '<span id="state">running — updated 12:34:56 UTC</span>' in text
    settings = re.search(r"var RELOAD = (\{.*?\});", text)
    assert settings is not None and "location.reload()" in text
    assert f'"updated": {now.timestamp() * 1000}' in settings.group(1)
    assert '"every": 5000.0' in settings.group(1)
    assert "not updated since 2025-03-01 12:34:56 UTC, the driver may have stopped" in text
    ended = page(write_report(evolved_frame, config(700), path, live=False, note="stopped: x"))
    assert '<span id="state">stopped: x</span>' in ended and "location.reload" not in ended


def test_a_failed_write_leaves_the_old_report(evolved_frame, tmp_path) -> None:
    path = write_report(evolved_frame, config(700), tmp_path / REPORT_FILE, live=True)
    before = path.read_bytes()
    broken = evolved_frame.copy()
    broken.loc[broken["status"] == "trained", "genome_json"] = "{}"  # no genome to describe
    with pytest.raises(InputError):
        write_report(broken, config(700), path, live=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [REPORT_FILE]  # no temporary file left


def test_an_empty_lineage(tmp_path) -> None:
    frame = read_lineage(tmp_path)
    text = page(write_report(frame, config(50), tmp_path / REPORT_FILE, live=True))
    assert "Nothing has been told yet" in text and "0 of 50 candidates told" in text
    assert "Plotly.newPlot" not in text  # no figure, so no plotly.js either
    assert "location.reload()" in text  # it comes, and the page with it


def test_only_rejected_candidates(tmp_path) -> None:
    why = "max_params: 99,999 (counted) > limit 1,000"
    frame = lineage(tmp_path, [record(i, status="rejected", reason=why) for i in range(3)])
    text = page(write_report(frame, config(), tmp_path / REPORT_FILE, live=False))
    assert_self_contained(text)
    assert "Nothing is trained yet over fitness x params" in text
    assert '<tr><td>max_params</td><td class="number">3</td>' in text
    caption = lineage_figure(frame).layout.title.text
    assert caption.startswith("0 of 3 candidates") and "not drawn: 3 sampled" in caption


def test_a_strategy_that_does_not_breed(tmp_path) -> None:
    records = [record(i, mutation="optuna", strategy="tpe") for i in range(5)]
    frame = lineage(tmp_path, records)
    fig = lineage_figure(frame)
    assert len(group(fig, TRAINED).x) == 5 and len(trace(fig, "mutation").x) == 0
    assert (
        "no candidate has a parent: each was sampled (optuna), none bred" in fig.layout.title.text
    )
    text = page(write_report(frame, config(strategy="tpe"), tmp_path / REPORT_FILE, live=False))
    assert "none bred" in text


def test_700_candidates_render_quickly(evolved_frame, tmp_path) -> None:
    assert len(evolved_frame) == 700
    start = time.perf_counter()
    write_report(
        evolved_frame, config(700, constraints=ENGINE_CONSTRAINTS), tmp_path / "r.html", live=True
    )
    assert time.perf_counter() - start < 10.0


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (Debian's chromium)")
def test_a_live_page_goes_stale_by_the_browsers_clock_alone(tmp_path) -> None:
    """In a browser, a live page written a day ago by the writer's clock still reloads (the
    writer's clock may differ from the reader's); one seen unchanged for STALE_SECONDS of the
    browser's own time stops and says so."""
    frame = lineage(tmp_path, [record(0, fitness=0.8), record(1, 0, fitness=0.9)])
    written = datetime.now(UTC) - timedelta(days=1)
    every = 100.0  # seconds between reloads: few reloads before it goes stale, a quick test
    path = tmp_path / REPORT_FILE
    write_report(frame, config(), path, live=True, updated_at=written, reload_seconds=every)
    soon = dom(f"file://{path}", wait_ms=3000)
    assert re.search(r'<span id="state">running — updated [\d:]+ UTC</span>', soon)
    later = dom(f"file://{path}", wait_ms=int((STALE_SECONDS + 2 * every) * 1000))  # virtual
    assert '<span id="state" class="stale">not updated since' in later
