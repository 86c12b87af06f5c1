from __future__ import annotations

import math

import pytest

from tvnsearch.errors import InputError
from tvnsearch.measure.constraints import Constraints, check_feasible, constraints_from_dict


def test_a_table_becomes_constraints() -> None:
    c = constraints_from_dict({"max_cpu_ms": 50, "max_params": 1_000_000}, source="run.toml")
    assert c == Constraints(max_cpu_ms=50, max_params=1_000_000)
    assert c.set_fields() == {"max_cpu_ms": 50, "max_params": 1_000_000}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_cpu_ms", 0, "must be > 0, but got 0"),
        ("max_gpu_ms", -1.5, "must be > 0, but got -1.5"),
        ("max_memory_mb", math.nan, "must be > 0, but got nan"),
        ("max_params", 2.5e6, "must be a whole number, but got 2500000.0"),
        ("max_flops", True, "must be a whole number, but got True"),
        ("max_cpu_ms", "fast", "must be a number, but got 'fast'"),
    ],
)
def test_bad_budgets_name_the_file_and_field(field, value, message) -> None:
    with pytest.raises(InputError) as err:
        constraints_from_dict({field: value}, source="run.toml")
    assert err.value.lines() == [f"run.toml: {field}: {message}"]
    with pytest.raises(InputError, match=f"constraints: {field}: "):
        Constraints(**{field: value})


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(InputError) as err:
        constraints_from_dict({"max_cpu": 5, "max_params": -1, "max_flops": 0}, source="r.toml")
    assert err.value.lines() == [
        "r.toml: max_cpu: unknown key",
        "r.toml: max_params: must be > 0, but got -1",
        "r.toml: max_flops: must be > 0, but got 0",
    ]


def test_budgets_no_network_can_meet_are_refused() -> None:
    with pytest.raises(InputError) as err:
        check_feasible(Constraints(max_params=100, max_flops=150), 400, source="run.toml")
    assert [line.split(":")[1].strip() for line in err.value.lines()] == ["max_params", "max_flops"]
    assert "smallest classifier alone needs 800" in str(err.value)
    check_feasible(Constraints(max_params=800, max_flops=800), 400, source="run.toml")
