from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.metrics import inception
from bench.metrics.inception import (
    InceptionFeatures,
    InceptionUnavailable,
    fid_inception_torchvision,
    find_inception_weights,
    load_inception,
)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    """A torch hub folder with no checkpoints, and no weights named by the environment."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    return tmp_path / "hub"


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    """A torchvision-layout Inception-V3 state dict with random weights (no download needed)."""
    from torchvision.models import inception_v3

    path = tmp_path_factory.mktemp("inception") / "random_inception.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    return path


def test_absent_weights_give_a_message_that_says_where_and_how(empty_hub):
    assert find_inception_weights() is None
    with pytest.raises(InceptionUnavailable) as info:
        load_inception()
    message = str(info.value)
    assert str(empty_hub / "checkpoints" / "inception_v3_google-*.pth") in message
    assert "--inception-weights" in message and inception.WEIGHTS_ENV in message
    assert inception.TORCHVISION_URL in message


def test_a_named_but_missing_file_is_an_error_not_a_fallback(empty_hub, tmp_path, monkeypatch):
    with pytest.raises(InceptionUnavailable, match="--inception-weights"):
        find_inception_weights(tmp_path / "nope.pth")
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(InceptionUnavailable, match=inception.WEIGHTS_ENV):
        find_inception_weights()


def test_a_file_that_is_not_inception_is_refused(empty_hub, tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(InceptionUnavailable, match="not an Inception-V3 state dict"):
        InceptionFeatures.from_weights(path)


def test_random_weights_load_and_embed_to_2048_dims(random_weights, empty_hub):
    checkpoints = empty_hub / "checkpoints"
    checkpoints.mkdir(parents=True)
    hub_copy = checkpoints / "inception_v3_google-test.pth"
    hub_copy.symlink_to(random_weights)
    assert find_inception_weights() == hub_copy
    assert find_inception_weights(random_weights) == random_weights

    model = InceptionFeatures.from_weights(random_weights)
    assert model.name.startswith("inception-v3-torchvision-")
    grey = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    feats = model.features(grey)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    assert model.features(torch.zeros(1, 3, 32, 32)).shape == (1, 2048)
    assert fid_inception_torchvision(grey, grey, model, reference_features=feats) == pytest.approx(
        0, abs=1e-3
    )
