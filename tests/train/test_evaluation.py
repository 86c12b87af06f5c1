"""``tvnsearch evaluate``: an exported network scored on the test split, as validation scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tvnsearch.cli.main import main
from tvnsearch.search.lineage import read_lineage
from tvnsearch.search.runs import load_run


@pytest.fixture(scope="module")
def exported(searched_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evaluate-export")
    argv = ["export", str(searched_run), "--best", "--out", str(out), "--format", "tvn-json"]
    assert main(argv) == 0
    (folder,) = out.iterdir()
    return folder


def with_test_split(searched_run: Path, root: Path) -> Path:
    """The run's dataset with a ``test/`` folder: a copy of its val videos."""
    data = Path(load_run(searched_run).data.path)
    for split in ("train", "val"):
        shutil.copytree(data / split, root / split)
    shutil.copytree(data / "val", root / "test")
    return root


def evaluate(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["evaluate", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_test_split_scores_as_validation_scored_the_same_videos(
    exported: Path, searched_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = with_test_split(searched_run, tmp_path / "data")
    test = evaluate(capsys, str(exported), "--data", str(data), "--clips", "1")
    assert test["split"] == "test" and test["num_clips"] == 1
    assert test["num_videos"] == len(list((data / "test").rglob("*.mp4")))
    # The search scored the same videos on one clip each: the same weights score the same.
    candidate = int(exported.name.rsplit("-c", 1)[1])
    frame = read_lineage(searched_run)
    row = frame[frame["candidate_id"] == candidate].iloc[0]
    assert test["scores"]["top1"] == pytest.approx(row["top1"], abs=1e-9)
    assert test["scores"]["top5"] == pytest.approx(row["top5"], abs=1e-9)
    val = evaluate(capsys, str(exported), "--data", str(data), "--split", "val", "--clips", "1")
    assert val["scores"] == test["scores"]


def test_several_clips_per_video_and_the_text_line(
    exported: Path, searched_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = with_test_split(searched_run, tmp_path / "data")
    assert main(["evaluate", str(exported), "--data", str(data), "--clips", "3"]) == 0
    out = capsys.readouterr().out
    assert f"test split of {data}," in out and " x 3 clips: top-1 " in out


def test_no_test_split_or_an_unknown_class_is_named(
    exported: Path, searched_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(exported)]) == 2  # the run's data has no test split
    assert "test split: has no videos" in capsys.readouterr().err
    data = with_test_split(searched_run, tmp_path / "data")
    for split in ("train", "val", "test"):
        (data / split / "zebra").mkdir()
        shutil.copy(next((data / split).rglob("*.mp4")), data / split / "zebra" / "z.mp4")
    assert main(["evaluate", str(exported), "--data", str(data)]) == 2
    assert "classes the network does not know: ['zebra']" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "not an export folder" in capsys.readouterr().err
