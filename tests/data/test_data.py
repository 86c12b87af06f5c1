from __future__ import annotations

import json
from pathlib import Path

import pytest

from tvnsearch.data.datasets import load_dataset
from tvnsearch.errors import InputError, Notice

# Paths are not opened here (decoding is the frame cache's job), so empty files will do.


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def class_tree(root: Path, counts: dict[str, int], suffix: str = ".avi") -> Path:
    for name, n in counts.items():
        for i in range(n):
            touch(root / name / f"v_{name}_{i:02d}{suffix}")
    return root


def test_class_folders_split_by_seed_per_class(tmp_path) -> None:
    root = class_tree(tmp_path / "ucf", {"Archery": 10, "Basketball": 5, "Diving": 20})
    touch(root / "Archery" / "notes.txt")
    touch(root / "Archery" / ".hidden.avi")
    ds = load_dataset(root, val_fraction=0.2, seed=1)
    assert ds.classes == ("Archery", "Basketball", "Diving") and not ds.multi_label
    assert len(ds.train) + len(ds.val) == 35
    val_per_class = [sum(v.labels == (c,) for v in ds.val) for c in range(3)]
    assert val_per_class == [2, 1, 4]
    assert all(v.path.parent.name == ds.classes[v.labels[0]] for v in ds.videos)
    again = load_dataset(root, val_fraction=0.2, seed=1)
    other = load_dataset(root, val_fraction=0.2, seed=2)
    assert again == ds and {v.path for v in other.val} != {v.path for v in ds.val}


def test_split_folders_are_kept_and_test_is_left_out(tmp_path) -> None:
    class_tree(tmp_path / "train", {"a": 3, "b": 2}, ".mp4")
    class_tree(tmp_path / "validation", {"a": 1, "b": 1}, ".webm")
    class_tree(tmp_path / "test", {"a": 4}, ".mkv")
    ds = load_dataset(tmp_path)
    assert (len(ds.train), len(ds.val)) == (5, 2)
    assert all(v.path.suffix == ".webm" for v in ds.val)


def test_split_folders_need_train_and_val(tmp_path) -> None:
    class_tree(tmp_path / "train", {"a": 2})
    with pytest.raises(InputError, match="need train/ and val/"):
        load_dataset(tmp_path)


def test_empty_folders_are_refused(tmp_path) -> None:
    with pytest.raises(InputError, match="no class folders"):
        load_dataset(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(InputError, match="no video files"):
        load_dataset(tmp_path)


def test_csv_list_with_splits_relative_paths_and_numeric_classes(tmp_path) -> None:
    (tmp_path / "lists").mkdir()
    csv = tmp_path / "lists" / "ucf.csv"
    csv.write_text(
        "path,label,split\n"
        "../videos/a.mp4,10,train\n"
        "/abs/b.mp4,2,train\n"
        "c.mp4,2,validation\n"
        "d.mp4,10,val\n"
        "e.mp4,3,test\n"
    )
    with pytest.warns(Notice, match=r"1 test video\(s\) of a class no train or val video has"):
        ds = load_dataset(csv)
    assert ds.classes == ("2", "10")  # numeric names in numeric order; test's class 3 unseen
    assert ds.test == ()
    assert [v.path for v in ds.train] == [tmp_path / "lists/../videos/a.mp4", Path("/abs/b.mp4")]
    assert [v.labels for v in ds.train] == [(1,), (0,)]
    assert [v.path.name for v in ds.val] == ["c.mp4", "d.mp4"]


def test_csv_multi_label_and_seeded_split_without_split_column(tmp_path) -> None:
    csv = tmp_path / "charades.csv"
    rows = [f"v{i}.mp4,walk;sit" if i % 2 else f"v{i}.mp4,sit" for i in range(10)]
    csv.write_text("path,labels\n" + "\n".join(rows) + "\n")
    ds = load_dataset(csv, val_fraction=0.3, seed=0)
    assert ds.multi_label and ds.classes == ("sit", "walk")
    # Stratified by each row's first label: round(5 * 0.3) = 2 of each group.
    assert len(ds.val) == 4 and len(ds.train) == 6
    assert sorted(v.labels for v in ds.val) == [(0,), (0,), (0, 1), (0, 1)]
    assert {v.labels for v in ds.videos} == {(0,), (0, 1)}


def test_jsonl_multi_label_lists(tmp_path) -> None:
    jsonl = tmp_path / "mlb.jsonl"
    records = [
        {"path": "a.mp4", "labels": ["swing", "hit"], "split": "train"},
        {"path": "b.mp4", "labels": ["ball"], "split": "train"},
        {"path": "c.mp4", "labels": [], "split": "val"},
        {"path": "d.mp4", "labels": ["hit", "swing", "hit"], "split": "val"},
    ]
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    ds = load_dataset(jsonl)
    assert ds.classes == ("ball", "hit", "swing") and ds.multi_label
    assert [v.labels for v in ds.train] == [(1, 2), (0,)]
    assert [v.labels for v in ds.val] == [(), (1, 2)]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("a.csv", "path,class\nx.mp4,a\n", "a.csv: label: need exactly one of the columns"),
        ("a.csv", "file,label\nx.mp4,a\n", "a.csv: path: missing column"),
        ("a.csv", "path,label,labels\nx.mp4,a,b\n", "a.csv: label: need exactly one"),
        ("a.csv", "path,label,split\nx.mp4,a,train\ny.mp4,b,dev\n", "line 3.split: must be"),
        ("a.csv", "path,label\nx.mp4,\n", "a.csv: line 2.label: must be a class name"),
        ("a.csv", "", "a.csv: has no header row"),
        ("a.csv", "path,label\n", "a.csv: lists no videos"),
        ("a.jsonl", '{"path": "x.mp4", "label": "a"}\n{oops\n', "a.jsonl: line 2: not valid JSON"),
        ("a.jsonl", '["x.mp4", "a"]\n', "a.jsonl: line 1: must be a JSON object"),
        ("a.jsonl", '{"path": 3, "labels": [1]}\n', "a.jsonl: line 1.path: must be a file path"),
        (
            "a.jsonl",
            '{"path": "x", "labels": {"a": 1}}\n',
            "line 1.labels: must be a list of class names",
        ),
        ("a.jsonl", '{"path": "x", "label": "a", "split": ["val"]}\n', "line 1.split: must"),
        ("a.txt", "x.mp4 1\n", "a.txt: must be a folder or a .csv or .jsonl list"),
    ],
)
def test_bad_lists_name_file_line_and_field(tmp_path, name, text, expected) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_dataset(path)
    assert expected in str(info.value)
    assert all(line.startswith(str(path)) for line in info.value.lines())


def test_many_bad_rows_are_capped(tmp_path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("path,label\n" + ",a\n" * 50)
    with pytest.raises(InputError) as info:
        load_dataset(path)
    assert len(info.value.problems) == 21 and "30 more problems" in info.value.lines()[-1]


def test_a_split_left_empty_is_refused(tmp_path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("path,label,split\nx.mp4,a,train\n")
    with pytest.raises(InputError, match="val split: has no videos"):
        load_dataset(path)


def test_missing_path(tmp_path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        load_dataset(tmp_path / "nowhere")


def ucf101_tree(root: Path, *, classes: int = 3, groups: int = 5, clips: int = 3) -> None:
    """Empty files named as UCF-101 names its clips (listing reads no video)."""
    for c in range(classes):
        folder = root / f"Class{c}"
        folder.mkdir(parents=True)
        for g in range(1, groups + 1):
            for k in range(1, clips + 1):
                (folder / f"v_Class{c}_g{g:02d}_c{k:02d}.avi").touch()


def test_ucf101_groups_are_detected_and_kept_whole_on_one_side(tmp_path) -> None:
    ucf101_tree(tmp_path)
    ds = load_dataset(tmp_path, val_fraction=0.2, seed=3)
    train = {v.group for v in ds.train}
    val = {v.group for v in ds.val}
    assert not train & val and len(train | val) == 15  # 3 classes x 5 groups
    assert {v.group for v in ds.val if v.labels == (0,)} <= {f"Class0_g{g:02d}" for g in range(9)}
    assert len(ds.val) == 3 * 3  # one group of 3 clips per class: round(15 * 0.2) = 3 videos


def test_a_list_s_group_column_and_a_kept_test_split(tmp_path) -> None:
    rows = [f"{c}{i}.mp4,{c},,src{c}{i // 2}" for c in "ab" for i in range(10)]
    rows += ["t1.mp4,a,test,", "t2.mp4,b,test,"]
    csv = tmp_path / "list.csv"
    csv.write_text("path,label,split,group\n" + "\n".join(rows) + "\n")
    ds = load_dataset(csv, val_fraction=0.2, seed=0)
    assert not {v.group for v in ds.train} & {v.group for v in ds.val}
    assert len(ds.val) == 4 and [v.path.name for v in ds.test] == ["t1.mp4", "t2.mp4"]
    assert ds.videos == ds.train + ds.val  # what a search reads: never the test split


def test_given_splits_that_put_a_group_on_both_sides_are_refused(tmp_path) -> None:
    csv = tmp_path / "list.csv"
    csv.write_text("path,label,split,group\na.mp4,x,train,g1\nb.mp4,x,val,g1\nc.mp4,x,val,g2\n")
    with pytest.raises(InputError, match=r"group 'g1': is in the train and the val split"):
        load_dataset(csv)


def test_a_test_folder_is_kept_beside_train_and_val(tmp_path) -> None:
    for split in ("train", "val", "test"):
        for c in ("x", "y"):
            (tmp_path / split / c).mkdir(parents=True)
            (tmp_path / split / c / f"{split}-{c}.mp4").touch()
    ds = load_dataset(tmp_path)
    assert [v.path.name for v in ds.test] == ["test-x.mp4", "test-y.mp4"]
    assert [v.labels for v in ds.test] == [(0,), (1,)]
