from __future__ import annotations

import copy
import json

import pytest
from conftest import PUBLISHED_DIR

from tvnsearch import InputError, from_tvn_dict, load_genome, published_genome, to_tvn_dict
from tvnsearch.genome.tvn_format import fits_tvn_format


def _raw(name: str) -> dict:
    return json.loads((PUBLISHED_DIR / f"{name}.json").read_text())


def test_all_published_files_load(published_name: str) -> None:
    g = load_genome(PUBLISHED_DIR / f"{published_name}.json")
    raw = _raw(published_name)
    assert len(g.blocks) == len(raw["blocks"])
    assert [b.num_filters for b in g.blocks] == [blk["filters"] for blk in raw["blocks"]]
    assert g.pipeline_depth == 0


def test_published_values_are_read_as_the_reference_reads_them() -> None:
    g = published_genome("tvn_mobile_1")
    assert (g.resolution, g.num_frames, g.frame_stride) == (224, 2, 1)  # from input_streams
    assert g.blocks[1].inverted_bottleneck and g.blocks[1].spatial_act == "hswish"
    assert g.blocks[0].squeeze_ratio == pytest.approx(0.004598785768716973)
    tvn1 = published_genome("tvn1")
    assert tvn1.blocks[0].context_gate is True and tvn1.blocks[0].skip is False
    assert tvn1.blocks[0].act == "relu"  # absent in the classic format: ReLU


def test_export_then_import_is_the_identity(published_name: str) -> None:
    g = published_genome(published_name)
    assert from_tvn_dict(json.loads(json.dumps(to_tvn_dict(g)))) == g


def test_export_keeps_the_published_genes(published_name: str) -> None:
    raw = _raw(published_name)
    out = to_tvn_dict(published_genome(published_name))
    for mine, theirs in zip(out["blocks"], raw["blocks"], strict=True):
        for key, value in mine.items():
            assert (
                theirs.get(
                    key,
                    {
                        "act": "relu",
                        "spatial_act": "relu",
                        "temporal_act": "relu",
                        "inv-bottle": 0,
                    }.get(key),
                )
                == value
            ), key


def test_stale_metadata_is_ignored() -> None:
    raw = _raw("tvn1")
    raw["num_blocks"] = 99
    raw["blocks"][0]["current_size"] = [1, 1]
    assert from_tvn_dict(raw) == published_genome("tvn1")


def test_unknown_and_bad_keys_are_named() -> None:
    raw = _raw("tvn2")
    raw["blocks"][3]["dilation"] = 2
    raw["blocks"][1]["spatial_type"] = "sep"
    raw["blocks"][0].pop("repeats")
    with pytest.raises(InputError) as err:
        from_tvn_dict(raw, source="tvn2.json")
    text = str(err.value)
    assert "tvn2.json: blocks[3].dilation: unknown key" in text
    assert "tvn2.json: blocks[1].spatial_type: must be one of" in text
    assert "tvn2.json: blocks[0].repeats: missing" in text


def test_multi_stream_graphs_other_than_a_chain_are_refused() -> None:
    raw = _raw("tvn_mobile_1")
    two = copy.deepcopy(raw)
    two["input_streams"].append(dict(raw["input_streams"][0]))
    with pytest.raises(InputError, match="input_streams: exactly one input stream"):
        from_tvn_dict(two)
    branch = copy.deepcopy(raw)
    branch["blocks"][1]["inputs"] = [0]
    with pytest.raises(InputError, match=r"blocks\[1\].inputs: only a chain"):
        from_tvn_dict(branch)


def test_genes_the_format_cannot_hold_are_refused(tiny_space) -> None:
    import dataclasses

    g = published_genome("tvn3")
    swish = dataclasses.replace(
        g, blocks=(dataclasses.replace(g.blocks[0], act="swish"), *g.blocks[1:])
    )
    with pytest.raises(InputError, match=r"blocks\[0\].act"):
        to_tvn_dict(swish)
    assert not fits_tvn_format(dataclasses.replace(g, pipeline_depth=2))
    assert fits_tvn_format(g)
