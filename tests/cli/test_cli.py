from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import PUBLISHED_DIR, SPACES_DIR

from tvnsearch.cli.main import main

TINY = str(SPACES_DIR / "tiny.toml")
TVN1 = str(PUBLISHED_DIR / "tvn1.json")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_show_prints_blocks_shapes_params_and_flops(capsys) -> None:
    code, out, _ = run_cli(capsys, "show", TVN1)
    assert code == 0
    assert "[256, 1, 112, 112]" in out and "26,539,710" in out and "dead genes" in out


def test_show_json(capsys) -> None:
    code, out, _ = run_cli(capsys, "show", TVN1, "--json", "--num-classes", "10")
    data = json.loads(out)
    assert code == 0
    assert data["params"] == 26_539_710 - 400 * 2049 + 10 * 2049
    assert data["flops"] > 8e9
    assert [b["output_shape"] for b in data["blocks"]] == [
        [256, 1, 112, 112],
        [512, 1, 56, 56],
        [512, 1, 19, 19],
        [2048, 1, 10, 10],
    ]
    assert data["fits_tvn_format"] is True


def test_sample_json_is_accepted_by_validate_and_show(capsys, tmp_path) -> None:
    code, out, _ = run_cli(capsys, "sample", "--space", TINY, "--seed", "3", "--json")
    assert code == 0
    path = tmp_path / "g.json"
    path.write_text(out)
    code, out, _ = run_cli(capsys, "validate", str(path), "--space", TINY, "--json")
    assert code == 0 and json.loads(out)["valid"] is True
    code, out, _ = run_cli(capsys, "show", str(path), "--json")
    assert code == 0 and json.loads(out)["params"] > 0


def test_sample_is_seeded_and_writes_a_file(capsys, tmp_path) -> None:
    first = run_cli(capsys, "sample", "--space", TINY, "--seed", "0", "--json")[1]
    second = run_cli(
        capsys,
        "sample",
        "--space",
        TINY,
        "--seed",
        "0",
        "--json",
        "--out",
        str(tmp_path / "s.json"),
    )[1]
    assert first == second == (tmp_path / "s.json").read_text()
    text = run_cli(capsys, "sample", "--space", TINY, "--seed", "0")[1]
    assert json.loads(first)["resolution"] and "block 0:" in text


def test_validate_lists_every_violation(capsys) -> None:
    code, _, err = run_cli(capsys, "validate", str(PUBLISHED_DIR / "tvn3.json"), "--space", TINY)
    assert code == 2
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 13
    assert (
        lines[0] == f"{PUBLISHED_DIR / 'tvn3.json'}: resolution: must be 32..64 step 16, "
        "but got 160"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{oops", "not valid JSON"),
        ('{"schema": "tvnsearch.genome/1", "resolution": 64}', "num_frames: missing"),
        (
            '{"image_size": 64, "num_frames": 2, "frame_stride": 1, "blocks": [{"filters": 8}]}',
            "blocks[0].spatial_type: missing",
        ),
    ],
)
def test_bad_genomes_exit_2_with_one_line_per_problem(capsys, tmp_path, content, expected) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, out, err = run_cli(capsys, "show", str(path))
    assert code == 2 and out == ""
    assert expected in err and "Traceback" not in err
    assert all(line.startswith(f"tvnsearch show: {path}: ") for line in err.splitlines())


def test_bad_space_exits_2(capsys, tmp_path) -> None:
    path = tmp_path / "space.toml"
    path.write_text((SPACES_DIR / "tiny.toml").read_text().replace("num_frames = {", "frames = {"))
    code, _, err = run_cli(capsys, "sample", "--space", str(path))
    assert code == 2
    assert f"{path}: genome.frames: unknown key" in err
    assert f"{path}: genome.num_frames: missing" in err


def test_console_script_exit_codes(tmp_path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "tvnsearch", "show", TVN1, "--json"], capture_output=True, text=True
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["params"] == 26_539_710
    bad = subprocess.run(
        [sys.executable, "-m", "tvnsearch", "show", str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cannot read" in bad.stderr


def test_an_unwritable_output_path_exits_2_in_one_line(capsys, tmp_path) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code, _, err = run_cli(capsys, "sample", "--space", TINY, "--out", str(folder))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("tvnsearch sample: ") and "a-folder" in err


@pytest.mark.parametrize("kind", ["recipe", "space"])
def test_a_binary_file_as_a_recipe_or_space_exits_2_in_one_line(capsys, tmp_path, kind) -> None:
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(256)))
    argv = ["search", str(binary)] if kind == "recipe" else ["sample", "--space", str(binary)]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.endswith(f"{binary}: cannot read: not a text file (not UTF-8)\n")
    assert err.count("\n") == 1
