from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from bench.io import CACHE_ENV
from bench.metrics.classifier import FeatureExtractorConfig, FeatureNet, train_classifier
from bench.metrics.features import default_cache_dir, get_feature_extractor
from tests.metrics.helpers import Images

TINY = FeatureExtractorConfig(width=4, feature_dim=16, epochs=1, batch_size=64)


@pytest.fixture(scope="module")
def small_digits(digits_data: Images) -> Images:
    """300 training digits: enough to exercise training and the cache in a fraction of a second."""
    return replace(
        digits_data, train_images=digits_data.train_images[:300], train_labels=digits_data.train_labels[:300]
    )


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 17, 23)])
def test_one_architecture_serves_every_image_size(shape):
    net = FeatureNet(shape[0], 10, width=4, feature_dim=16, dropout=0.0).eval()
    x = torch.zeros(2, *shape)
    assert net.embed(x).shape == (2, 16)
    assert net(x).shape == (2, 10)


def test_default_classifier_on_digits_is_accurate(digits_extractor, digits_data):
    assert digits_extractor.test_accuracy >= 0.95
    assert digits_extractor.record["cached"] is False
    assert digits_extractor.name.startswith("classifier-digits-") and len(digits_extractor.name) == 26
    feats = digits_extractor.features(digits_data.test_images[:7])
    assert feats.shape == (7, 128) and feats.dtype == torch.float32
    probs = digits_extractor.predict_proba(digits_data.test_images[:7])
    assert torch.allclose(probs.sum(1), torch.ones(7))
    assert torch.equal(digits_extractor.predict(digits_data.test_images[:7]), probs.argmax(1))


def test_training_is_reproducible(small_digits):
    a, record = train_classifier(small_digits, TINY)
    b, _ = train_classifier(small_digits, TINY)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert set(record) >= {"test_accuracy", "train_seconds", "config", "num_train"}


def test_training_leaves_the_global_rng_and_thread_count_alone(small_digits):
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _, record = train_classifier(small_digits, TINY, threads=1)
    assert torch.equal(torch.rand(3), expected)
    assert record["threads"] == 1 and torch.get_num_threads() == threads


def test_cache_round_trip(small_digits, tmp_path):
    first = get_feature_extractor("digits", small_digits, TINY, cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"{first.name}.json", f"{first.name}.pt"]
    record = json.loads((tmp_path / f"{first.name}.json").read_text())
    assert record["test_accuracy"] == first.test_accuracy and record["config"]["width"] == 4
    second = get_feature_extractor("digits", small_digits, TINY, cache_dir=tmp_path)
    assert second.record["cached"] is True and second.name == first.name
    x = small_digits.test_images[:20]
    assert torch.equal(first.features(x), second.features(x))


def test_cache_key_covers_config_and_data(small_digits, tmp_path):
    base = get_feature_extractor("digits", small_digits, TINY, cache_dir=tmp_path).name
    other_config = get_feature_extractor("digits", small_digits, replace(TINY, seed=1), cache_dir=tmp_path)
    flipped = replace(small_digits, train_images=small_digits.train_images.flip(-1))
    other_data = get_feature_extractor("digits", flipped, TINY, cache_dir=tmp_path)
    assert len({base, other_config.name, other_data.name}) == 3
    assert not other_config.record["cached"] and not other_data.record["cached"]


def test_cache_dir_from_environment(small_digits, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert default_cache_dir() == tmp_path / "features"
    extractor = get_feature_extractor("digits", small_digits, TINY)
    assert (tmp_path / "features" / f"{extractor.name}.pt").is_file()


def test_damaged_cache_is_retrained_with_a_warning(small_digits, tmp_path):
    name = get_feature_extractor("digits", small_digits, TINY, cache_dir=tmp_path).name
    (tmp_path / f"{name}.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="damaged feature-classifier cache"):
        again = get_feature_extractor("digits", small_digits, TINY, cache_dir=tmp_path)
    assert again.record["cached"] is False
    assert get_feature_extractor("digits", small_digits, TINY, cache_dir=tmp_path).record["cached"] is True


def test_unlabeled_data_and_wrong_shapes_are_clear_errors(small_digits, digits_extractor, tmp_path):
    unlabeled = replace(small_digits, train_labels=None, test_labels=None, num_classes=None)
    with pytest.raises(ValueError, match="no labels"):
        get_feature_extractor("folder", unlabeled, TINY, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"\[N, 1, 8, 8\]"):
        digits_extractor.features(torch.zeros(2, 1, 28, 28))
