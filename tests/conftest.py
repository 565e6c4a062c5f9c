import pytest

import denoisers
from tests.helpers import tiny_factory


@pytest.fixture(autouse=True, scope="session")
def tiny_denoiser_plugin():
    """Register a tiny denoiser so run-machinery tests do not pay for a real architecture."""
    denoisers.REGISTRY.register("tiny-test", tiny_factory)
    yield
    denoisers.REGISTRY._plugins.pop("tiny-test", None)
