"""Report benchmark: a run's HTML report and Optuna journal at 30, 700 and 10,000 candidates.

A lineage of each size is made by the real engine (evolution on the tiny space; a gate of counted
constraints rejects the largest networks) with a fake evaluator: its fitness grows smoothly with
the network's size and frames, with a little noise (so evolution climbs, as it does on real data),
and it fails about one candidate in 30 the way training does (a diverged loss, with a log). For
each size: seconds to draw the report and its size, seconds to build the journal from the lineage;
with Chromium installed, screenshots of the report's top and of its lineage tree
(``bench/results/report-<n>-*.png``), to be looked at. ``--run RUN`` adds a real run's report
(``make search``'s).

    .venv/bin/python bench/report_bench.py [--sizes 30 700 10000] [--run results/local-...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.space import load_space
from tvnsearch.inspect.journal import JOURNAL_FILE, run_study, sync_journal
from tvnsearch.inspect.lineage_tree import lineage_figure
from tvnsearch.inspect.plots_html import write_page
from tvnsearch.inspect.report import REPORT_FILE, write_report
from tvnsearch.measure.constraints import Constraints
from tvnsearch.measure.gate import Gate
from tvnsearch.search.engine import Engine
from tvnsearch.search.evolution import Evolution
from tvnsearch.search.inline import InlineExecutor
from tvnsearch.search.lineage import LineageWriter, read_lineage, records_from_frame
from tvnsearch.search.progress import Tally
from tvnsearch.search.runs import load_run, save_run_log
from tvnsearch.search.worker import Evaluation, Job
from tvnsearch.status import Status

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from browser import CHROMIUM, screenshot  # noqa: E402
from engine_runs import TINY, recipe  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "out" / "report"
NUM_CLASSES = 9
MAX_PARAMS = 60_000


def fake_training(job: Job, task: object) -> Evaluation:
    """A fitness from the network alone: larger and longer clips score higher, saturating, with a
    noise fixed by the genome; one candidate in about 30 diverges."""
    genome = job.genome
    draw = int(hashlib.sha256(genome.id.encode()).hexdigest()[:8], 16) / 2**32
    if draw < 1 / 30:
        why = f"loss became nan at iteration {int(draw * 3000)}"
        log = f"Traceback (fake training)\nFloatingPointError: {why}\n"
        return Evaluation(Status.FAILED, reason=why, log=log)
    cost = count_cost(genome, NUM_CLASSES)
    size = 1 - math.exp(-cost.flops / 4e7)
    frames = min(genome.num_frames, 8) / 8
    top1 = 0.15 + 0.45 * size + 0.2 * frames * size + 0.08 * (draw - 0.5)
    top5 = min(1.0, 0.55 + 0.4 * size + 0.05 * (draw - 0.5))
    return Evaluation(
        Status.TRAINED, fitness=top1 + top5, top1=top1, top5=top5, train_seconds=30 + 60 * size
    )


def make_run(size: int) -> Path:
    """A run folder holding a lineage of ``size`` candidates told by the real engine."""
    run_dir = WORK / f"evolution-{size}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    initial = max(10, min(200, size // 4))
    options = {"initial_size": initial, "tournament_size": max(2, initial // 4)}
    recipe(run_dir / "recipe.toml", strategy="evolution", options=options, budget=size,
           iterations=300, num_workers=1)  # fmt: skip
    strategy = Evolution(load_space(TINY), seed=0, **options)
    gate = Gate(Constraints(max_params=MAX_PARAMS), num_classes=NUM_CLASSES)
    with LineageWriter(run_dir) as writer:
        Engine(
            strategy,
            gate,
            InlineExecutor(fake_training),
            writer,
            run_id=run_dir.name,
            tally=Tally(size),
            save_log=partial(save_run_log, run_dir),
        ).run()
    return run_dir


def measure(run_dir: Path, name: str) -> dict[str, Any]:
    frame = read_lineage(run_dir)
    config = load_run(run_dir)
    report = run_dir / REPORT_FILE
    start = time.perf_counter()
    write_report(frame, config, report, live=False)
    draw = time.perf_counter() - start
    (run_dir / JOURNAL_FILE).unlink(missing_ok=True)
    start = time.perf_counter()
    sync_journal(run_dir / JOURNAL_FILE, run_study(run_dir, config), records_from_frame(frame))
    journal = time.perf_counter() - start
    shots = []
    if CHROMIUM:  # the report's top, and its lineage tree alone (the same figure, on a page)
        tree = run_dir / "lineage-tree.html"
        write_page(lineage_figure(frame), tree)
        for part, page, height in (("top", report, 1400), ("lineage", tree, 750)):
            path = RESULTS / f"report-{name}-{part}.png"
            screenshot(f"file://{page.resolve()}", path, height=height)
            shots.append(str(path.relative_to(ROOT)))
    counts = frame["status"].value_counts().to_dict()
    return {
        "run": name,
        "candidates": len(frame),
        "trained": int(counts.get("trained", 0)),
        "rejected": int(counts.get("rejected", 0)),
        "report_seconds": draw,
        "report_mb": report.stat().st_size / 2**20,
        "journal_seconds": journal,
        "screenshots": shots,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[30, 700, 10_000])
    parser.add_argument("--run", type=Path, help="a real run folder to report on as well")
    parser.add_argument("--out", type=Path, default=RESULTS / "report_bench.json")
    args = parser.parse_args(argv)
    rows = [measure(make_run(size), str(size)) for size in args.sizes]
    if args.run:
        copy = WORK / args.run.name
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(args.run, copy)
        rows.append(measure(copy, args.run.name))
    keys = [k for k in rows[0] if k != "screenshots"]
    print("  ".join(f"{k:>15}" for k in keys))
    for row in rows:
        print("  ".join(f"{_fmt(row[k]):>15}" for k in keys))
    args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    sys.exit(main())
