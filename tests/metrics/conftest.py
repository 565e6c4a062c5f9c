"""Shared data for the metric tests: scikit-learn's 8x8 digits and the feature classifier trained on them."""

from __future__ import annotations

import pytest

from bench.metrics import FeatureExtractor, get_feature_extractor
from tests.metrics.helpers import Images, load_digits_data


@pytest.fixture(scope="session")
def digits_data() -> Images:
    return load_digits_data()


@pytest.fixture(scope="session")
def digits_extractor(digits_data: Images, tmp_path_factory: pytest.TempPathFactory) -> FeatureExtractor:
    """The default feature classifier on digits, trained once per session into a temporary cache.

    One thread: the training's many small operations otherwise wait on a second, busy core.
    """
    folder = tmp_path_factory.mktemp("features")
    return get_feature_extractor("digits", digits_data, cache_dir=folder, threads=1)
