from __future__ import annotations

import json

import pytest
import torch
from genomes import small_genome
from safetensors.torch import save_file

from tvnsearch.data.clips import ClipSpec, Normalization
from tvnsearch.errors import InputError
from tvnsearch.models.builder import build_model
from tvnsearch.train.weights import (
    ModelInfo,
    load_model,
    read_weights,
    run_weights_path,
    save_run_weights,
    weights_bytes,
)

CLASSES = ("jump", "run", "sit")


def info(clip: ClipSpec | None = None) -> ModelInfo:
    genome = small_genome()
    return ModelInfo(genome, clip or ClipSpec.of(genome), CLASSES)


def test_weights_and_what_runs_them_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(small_genome(), len(CLASSES)).eval()
    odd = info(clip=ClipSpec(4, 1, 32, Normalization((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))))
    save_run_weights(tmp_path, 7, weights_bytes(model, odd))
    path = run_weights_path(tmp_path, 7)
    assert path == tmp_path / "weights" / "candidate-7.safetensors"
    assert not list(path.parent.glob(".*"))  # no temp file left behind
    saved = read_weights(path)
    assert saved.info == odd
    expected = model.state_dict()
    assert saved.state.keys() == expected.keys()
    assert all(torch.equal(saved.state[k], expected[k]) for k in expected)
    loaded, loaded_info = load_model(path)
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded_info.num_classes == 3 and not loaded.training


def test_a_file_that_is_not_weights_is_refused_by_name(tmp_path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match=r"junk\.safetensors: not a readable safetensors file"):
        read_weights(junk)
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    with pytest.raises(InputError, match=r"bare\.safetensors: metadata\.format: must be"):
        read_weights(bare)


def test_broken_metadata_is_named_field_by_field(tmp_path) -> None:
    metadata = info().to_metadata() | {"classes": json.dumps([]), "clip": json.dumps({"x": 1})}
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata=metadata)
    with pytest.raises(InputError) as caught:
        read_weights(path)
    assert [p.field for p in caught.value.problems] == ["metadata.classes", "metadata.clip"]


def test_weights_of_another_network_do_not_load(tmp_path) -> None:
    other = build_model(small_genome(num_filters=16), len(CLASSES))
    path = tmp_path / "w.safetensors"
    path.write_bytes(weights_bytes(other, info()))  # metadata says the 8-filter genome
    with pytest.raises(InputError, match="the weights do not fit the genome"):
        load_model(path)
