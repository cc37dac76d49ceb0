"""Fixtures for the RS-M-CLIP tests: one tiny generated model of RS-M-CLIP's kind per session."""

import numpy as np
import pytest

# One query per supported script: Latin with accents, Cyrillic, Chinese, Korean (and plain English).
QUERIES = {
    "en": "new buildings appeared near the road",
    "pt": "novos edifícios perto da estrada",
    "fr": "une forêt à côté d'une rivière",
    "de": "neue Gebäude an der Straße",
    "ru": "новые здания возле дороги",
    "zh": "道路附近出现了新建筑",
    "ko": "도로 근처에 새 건물",
}


@pytest.fixture(scope="session")
def queries():
    return dict(QUERIES)


@pytest.fixture(scope="session")
def tile_pairs():
    """Six BEFORE/AFTER uint8 tile pairs (N,3,96,96) with different content."""
    rng = np.random.default_rng(7)
    before = rng.integers(0, 256, size=(6, 3, 96, 96), dtype=np.uint8)
    after = before.copy()
    after[:, :, 20:70, 20:70] = rng.integers(0, 256, size=(6, 3, 50, 50), dtype=np.uint8)
    return before, after
