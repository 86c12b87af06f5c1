from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from genomes import small_genome

from tvnsearch.data.clips import ClipSpec
from tvnsearch.data.synth import SynthConfig, write_synth
from tvnsearch.search.recipe import DataSection
from tvnsearch.search.worker import Job, Task, evaluate, prepared_data
from tvnsearch.train.training import TrainConfig, train_genome
from tvnsearch.train.weights import load_model


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Task:
    root = tmp_path_factory.mktemp("data")
    write_synth(root / "synth", SynthConfig(num_videos=18, size=32, num_frames=8))
    config = TrainConfig(iterations=2, batch_size=4)
    return Task(DataSection(str(root / "synth"), str(root / "frames"), 32, 0.2, 0), config)


def test_a_genome_is_trained_and_scored_with_where_it_ran(task: Task) -> None:
    evaluation = evaluate(Job(small_genome()), task)
    assert evaluation.status == "trained" and evaluation.reason is None
    assert 0 <= evaluation.fitness <= 2 and evaluation.fitness == evaluation.top1 + evaluation.top5
    assert evaluation.train_seconds > 0 and ":" in evaluation.worker_node
    measured = {"top1", "train_seconds", "worker_node", "fitness_noise"}
    assert set(evaluation.measurements()) >= measured


def test_the_noise_of_fitness_comes_back_as_training_measured_it(task: Task) -> None:
    several = dataclasses.replace(task, train=dataclasses.replace(task.train, val_clips=3))
    evaluation = evaluate(Job(small_genome()), several)
    trained = train_genome(small_genome(), prepared_data(task), several.train)
    assert evaluation.fitness_noise == trained.fitness_noise and trained.fitness_noise >= 0
    assert evaluation.fitness == trained.fitness


def test_data_that_cannot_be_read_here_is_a_failure_not_an_exception(tmp_path, task) -> None:
    missing = Task(DataSection(str(tmp_path / "none"), None, 32, 0.2, 0), task.train)
    evaluation = evaluate(Job(small_genome()), missing)
    assert evaluation.status == "failed" and "no such file or folder" in evaluation.reason
    assert evaluation.fitness is None


def test_the_same_task_is_prepared_once_per_process(task: Task, monkeypatch) -> None:
    from tvnsearch.search import worker as module

    evaluate(Job(small_genome()), task)
    monkeypatch.setattr("tvnsearch.train.training.prepare_data", None)  # would fail if called again
    assert module.evaluate(Job(small_genome()), task).status == "trained"
    assert Path(task.data.path).is_dir()


def test_the_driver_may_watch_the_videos_decoded_and_workers_stay_silent(
    task: Task, tmp_path, capfd, monkeypatch
) -> None:
    monkeypatch.setenv("TVNSEARCH_PROGRESS", "1")  # bars even where stderr is no terminal
    data = dataclasses.replace(task.data, cache_dir=str(tmp_path / "frames"))  # not prepared
    fresh = dataclasses.replace(task, data=data)
    prepared_data(dataclasses.replace(fresh, data=dataclasses.replace(data, split_seed=1)))
    assert capfd.readouterr().err == ""
    prepared_data(fresh, show_progress=True)
    assert "decoding videos: 100%" in capfd.readouterr().err


def test_the_trained_weights_come_back_with_what_runs_them(task: Task, tmp_path) -> None:
    evaluation = evaluate(Job(small_genome()), task)
    assert "weights" not in evaluation.measurements() and "weights" not in repr(evaluation)
    path = tmp_path / "w.safetensors"
    path.write_bytes(evaluation.weights)
    model, info = load_model(path)
    assert info.genome == small_genome() and info.clip == ClipSpec.of(small_genome())
    assert info.classes == prepared_data(task).dataset.classes and not info.multi_label
    assert not model.training


def test_weights_are_left_out_when_not_kept(task: Task) -> None:
    evaluation = evaluate(Job(small_genome()), dataclasses.replace(task, keep_weights=False))
    assert evaluation.status == "trained" and evaluation.weights is None


def test_a_failure_keeps_its_traceback_and_what_the_worker_printed(task: Task, monkeypatch):
    from tvnsearch.search import worker as module

    def noisy(genome, data, config, cuts=(), parent_weights=None):
        print("python says hello")
        os.write(2, b"a C library says hello\n")  # below Python: straight to the descriptor
        raise RuntimeError("kernel exploded\nsecond line")

    monkeypatch.setattr("tvnsearch.train.training.train_model", noisy)
    evaluation = module.evaluate(Job(small_genome()), task)
    assert evaluation.status == "failed" and evaluation.reason == "RuntimeError: kernel exploded"
    assert evaluation.log.startswith("Traceback") and "in noisy" in evaluation.log
    assert "python says hello" in evaluation.log and "a C library says hello" in evaluation.log
    assert "log" not in evaluation.measurements()  # a path in the lineage, written by the driver


def test_a_failed_training_keeps_its_traceback(task: Task) -> None:
    broken = dataclasses.replace(task, train=dataclasses.replace(task.train, batch_size=0))
    evaluation = evaluate(Job(small_genome()), broken)
    assert evaluation.status == "failed" and evaluation.log.startswith("Traceback")
    assert evaluation.reason.splitlines()[0] in evaluation.log


def test_output_is_captured_only_while_evaluating(task: Task, capfd) -> None:
    evaluate(Job(small_genome()), task)
    print("after")
    os.write(1, b"after, below python\n")
    out, _ = capfd.readouterr()
    assert "after" in out and "after, below python" in out
