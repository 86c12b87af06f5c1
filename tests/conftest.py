from __future__ import annotations

import random
from pathlib import Path

import pytest

from tvnsearch import PUBLISHED, load_space
from tvnsearch.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
SPACES_DIR = ROOT / "search_spaces"
PUBLISHED_DIR = ROOT / "tvnsearch" / "published"
SPACE_NAMES = ("tvn", "tvn_mobile", "tiny")


@pytest.fixture(scope="session", params=SPACE_NAMES)
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return load_space(SPACES_DIR / f"{request.param}.toml")


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    return load_space(SPACES_DIR / "tiny.toml")


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


@pytest.fixture(params=PUBLISHED)
def published_name(request: pytest.FixtureRequest) -> str:
    return request.param
