import pytest

import denoisers
from tests.helpers import tiny_factory


@pytest.fixture(autouse=True, scope="session")
def tiny_denoiser_plugin():
    """Register a tiny denoiser so run-machinery tests do not pay for a real architecture."""
    denoisers.REGISTRY.register("tiny-test", tiny_factory)
    yield
    denoisers.REGISTRY._plugins.pop("tiny-test", None)


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Feature classifiers and the matmul peak are cached per test session, not in the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("BENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()
