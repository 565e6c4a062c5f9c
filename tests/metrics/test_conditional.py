from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from bench.metrics.conditional import class_conditional_scores, class_reference_rows
from bench.metrics.distances import frechet_distance


class PixelClassifier:
    """A classifier space whose answers are known by hand: features are the flattened pixels, the predicted
    class is the brightest of the first ``num_classes`` pixels. Records every batch it embeds."""

    name = "pixels-argmax"

    def __init__(self, num_classes: int = 3) -> None:
        self.num_classes = num_classes
        self.seen: list[Tensor] = []

    def features_and_labels(self, images: Tensor) -> tuple[Tensor, Tensor]:
        self.seen.append(images.clone())
        flat = images.flatten(1)
        return flat.clone(), flat[:, : self.num_classes].argmax(1)


def pixels(rows: Tensor) -> Tensor:
    """[N, D] rows as [N, 1, 1, D] images."""
    return rows.reshape(rows.shape[0], 1, 1, -1).float()


def gaussian_reference(counts: list[int], seed: int = 0) -> tuple[Tensor, Tensor]:
    """Reference images of 3 pixels, ``counts[k]`` of class k around a class-dependent mean."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(counts)])
    rows = torch.randn(len(labels), 3, generator=g, dtype=torch.float64) * 0.3 + labels[:, None] * 0.5
    return pixels(rows), labels


def test_class_accuracy_is_the_hand_count_and_samples_are_embedded_once():
    brightest = torch.tensor([0, 0, 1, 2, 2, 1, 0])
    asked = torch.tensor([0, 1, 1, 2, 0, 1, 2])  # agrees at samples 0, 2, 3 and 5: 4 of 7
    reference, labels = gaussian_reference([5, 5, 5])
    extractor = PixelClassifier(3)
    got = class_conditional_scores(pixels(F.one_hot(brightest, 3)), asked, reference, labels, extractor)
    assert got["class_accuracy"] == pytest.approx(4 / 7)
    assert got["classes_scored"] == 3.0
    assert [len(batch) for batch in extractor.seen] == [7, 15]


def test_equal_covariances_give_the_squared_mean_shift_per_class():
    """Samples asked for k are the reference images of k translated by delta_k: the covariances are equal,
    so FD_k = ||delta_k||^2. Class 2 is in the reference but never asked for, so it is not scored."""
    reference, labels = gaussian_reference([12, 12, 12])
    delta = {0: torch.tensor([0.3, 0.4, 0.0]), 1: torch.tensor([0.0, 0.0, -1.0])}  # ||.||^2 = 0.25 and 1
    parts = [(reference[labels == k].flatten(1) + d, torch.full((12,), k)) for k, d in delta.items()]
    rows, asked = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    order = torch.randperm(24, generator=torch.Generator().manual_seed(1))  # interleave the classes
    got = class_conditional_scores(pixels(rows[order]), asked[order], reference, labels, PixelClassifier())
    assert got["fd_class_mean"] == pytest.approx((0.25 + 1.0) / 2, rel=1e-6)
    assert got["fd_class_worst"] == pytest.approx(1.0, rel=1e-6)
    assert got["fd_class_worst_index"] == 1.0 and got["classes_scored"] == 2.0


def test_per_class_fd_is_computed_on_the_subsets_asked_for():
    """Random samples whose predicted classes mostly disagree with the asked ones: grouping must follow
    ``asked``, so the per-class FDs are those of the hand-split subsets."""
    g = torch.Generator().manual_seed(2)
    samples = torch.randn(30, 1, 1, 3, generator=g)
    asked = torch.tensor([0, 1, 2] * 10)
    reference, labels = gaussian_reference([8, 10, 9], seed=3)
    x, r = samples.flatten(1).numpy(), reference.flatten(1).numpy()
    a, lab = asked.numpy(), labels.numpy()
    per_class = [frechet_distance(x[a == k], r[lab == k]) for k in range(3)]
    got = class_conditional_scores(samples, asked, reference, labels, PixelClassifier())
    assert got["fd_class_mean"] == pytest.approx(np.mean(per_class), rel=1e-9)
    assert got["fd_class_worst"] == pytest.approx(max(per_class), rel=1e-9)
    assert got["fd_class_worst_index"] == float(np.argmax(per_class))


def test_swapping_the_asked_labels_of_two_classes():
    g = torch.Generator().manual_seed(4)
    truth = torch.tensor([0, 1] * 6)
    samples = pixels(F.one_hot(truth, 2) + 0.1 * torch.rand(12, 2, generator=g))  # brightest pixel = truth
    reference = pixels(F.one_hot(truth, 2) + 0.1 * torch.rand(12, 2, generator=g))
    right = class_conditional_scores(samples, truth, reference, truth, PixelClassifier(2))
    swapped = class_conditional_scores(samples, 1 - truth, reference, truth, PixelClassifier(2))
    assert right["class_accuracy"] == 1.0 and swapped["class_accuracy"] == 0.0
    assert swapped["fd_class_mean"] > 1.5 > right["fd_class_mean"]  # the class means are sqrt(2) apart


def test_reference_rows_draw_real_images_and_repeat_class_means():
    """Class 0 has 10 images and is asked 4 times; class 2 has 3 and is asked 5 times, so all 3 are drawn,
    while its mean image is repeated 5 times. Class 1 is not asked for."""
    g = torch.Generator().manual_seed(5)
    labels = torch.tensor([0] * 10 + [1] * 10 + [2] * 3)
    images = pixels(torch.randn(23, 3, generator=g) + labels[:, None])
    reference, ref_labels = gaussian_reference([9, 9, 9], seed=6)
    asked = torch.tensor([2, 0, 2, 0, 2, 0, 2, 0, 2])
    extractor = PixelClassifier()
    rows = class_reference_rows(images, labels, reference, ref_labels, extractor, asked, seed=7)
    real, mean = extractor.seen[0].flatten(1), extractor.seen[2].flatten(1)  # (samples, reference) per row

    # every drawn image is a distinct image of the class it is scored as
    match = (real[:, None, :] == images.flatten(1)[None, :, :]).all(-1)  # (drawn, images)
    assert (match.sum(1) == 1).all()
    drawn = match.float().argmax(1)
    assert len(set(drawn.tolist())) == 7
    assert sorted(labels[drawn].tolist()) == [0] * 4 + [2] * 3
    assert rows["real"]["classes_scored"] == 2.0

    # the ceiling: covariance 0, so FD_k = ||m_k - mu_ref_k||^2 + Tr(S_ref_k), m_k the class mean image
    assert len(mean) == 9
    closed = []
    for k in (0, 2):
        m = images[labels == k].flatten(1).double().mean(0).numpy()
        r = reference[ref_labels == k].flatten(1).double().numpy()
        closed.append(((m - r.mean(0)) ** 2).sum() + np.trace(np.cov(r, rowvar=False)))
    got = rows["class-mean-image"]
    assert all(math.isfinite(v) for v in got.values())
    assert got["fd_class_mean"] == pytest.approx(np.mean(closed), rel=1e-6)
    assert got["fd_class_worst"] == pytest.approx(max(closed), rel=1e-6)
    assert got["fd_class_worst_index"] == (0.0, 2.0)[int(np.argmax(closed))]

    again = class_reference_rows(images, labels, reference, ref_labels, PixelClassifier(), asked, seed=7)
    assert again == rows


@pytest.fixture(scope="module")
def digit_rows(digits_data, digits_extractor) -> dict[str, dict[str, float]]:
    asked = torch.arange(10).repeat_interleave(20)
    d = digits_data
    return class_reference_rows(
        d.train_images, d.train_labels, d.test_images, d.test_labels, digits_extractor, asked, seed=0
    )


def test_real_images_of_each_class_score_near_the_floor(digits_data, digits_extractor, digit_rows):
    """Another draw of 20 training images per class, scored as samples, lands near the real floor and far
    below the class-mean ceiling (measured: floor about 26, ceiling about 130)."""
    real, ceiling = digit_rows["real"], digit_rows["class-mean-image"]
    assert real["classes_scored"] == ceiling["classes_scored"] == 10.0
    assert real["class_accuracy"] > 0.95
    assert real["fd_class_mean"] * 3 < ceiling["fd_class_mean"]
    d = digits_data
    g = torch.Generator().manual_seed(11)
    pick = torch.cat([torch.nonzero(d.train_labels == k).squeeze(1)[:20] for k in range(10)])
    pick = pick[torch.randperm(len(pick), generator=g)]
    samples = class_conditional_scores(
        d.train_images[pick], d.train_labels[pick], d.test_images, d.test_labels, digits_extractor
    )
    assert samples["class_accuracy"] > 0.95
    assert samples["fd_class_mean"] < 1.5 * real["fd_class_mean"]
    assert samples["fd_class_mean"] * 3 < ceiling["fd_class_mean"]
    swapped = class_conditional_scores(
        d.train_images[pick], (d.train_labels[pick] + 1) % 10, d.test_images, d.test_labels, digits_extractor
    )
    assert swapped["class_accuracy"] < 0.05
    assert swapped["fd_class_mean"] > ceiling["fd_class_mean"]


class FeaturesOnly:
    name = "features-only"

    def features(self, images: Tensor) -> Tensor:
        return images.flatten(1)


def valid() -> dict:
    """Arguments that score without error: 2 samples and 3 reference images of each of 3 classes."""
    reference, labels = gaussian_reference([3, 3, 3])
    return {
        "samples": reference[[0, 1, 3, 4, 6, 7]],
        "asked": torch.tensor([0, 0, 1, 1, 2, 2]),
        "reference_images": reference,
        "reference_labels": labels,
        "extractor": PixelClassifier(),
    }


def test_valid_arguments_score():
    assert class_conditional_scores(**valid())["classes_scored"] == 3.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"samples": torch.zeros(6, 1, 3)}, r"samples must be a \[N, C, H, W\]"),
        ({"samples": torch.zeros(6, 1, 1, 4)}, r"share \[C, H, W\], got \(1, 1, 4\) and \(1, 1, 3\)"),
        ({"samples": torch.full((6, 1, 1, 3), float("nan"))}, "samples contain NaN"),
        ({"samples": torch.zeros(0, 1, 1, 3), "asked": torch.zeros(0, dtype=torch.int64)}, "no samples"),
        ({"asked": torch.tensor([0, 0, 1, 1, 2, 2], dtype=torch.int32)}, r"asked must be an int64 .*\[6\]"),
        ({"asked": torch.tensor([0, 0, 1, 1, 2])}, "asked must have one class per image, 6, got 5"),
        ({"asked": torch.tensor([[0, 0, 1, 1, 2, 2]])}, r"asked must be an int64 tensor of shape \[6\]"),
        ({"asked": torch.tensor([0, 0, 1, 1, 3, 3])}, r"asked must be class indices in \[0, 3\).*got 3"),
        ({"asked": torch.tensor([0, 0, 1, 1, -1, 2])}, r"\[0, 3\).*got -1"),
        ({"reference_labels": torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 5])}, r"reference_labels .*got 5"),
        ({"reference_labels": torch.zeros(8, dtype=torch.int64)}, "reference_labels must have one class"),
        ({"asked": torch.tensor([0, 0, 1, 1, 1, 2])}, "class 2 has 1 samples and 3 reference images"),
        (
            {"reference_labels": torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 2])},
            "min_per_class=2 .*class 2 has 2 samples and 1 reference images",
        ),
        ({"extractor": FeaturesOnly()}, "need a classifier feature space.*'features-only'"),
    ],
)
def test_invalid_arguments_are_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        class_conditional_scores(**{**valid(), **change})


def test_min_per_class_is_enforced_and_at_least_two():
    with pytest.raises(ValueError, match="min_per_class=3 .*class 0 has 2 samples"):
        class_conditional_scores(**valid(), min_per_class=3)
    with pytest.raises(ValueError, match="min_per_class must be >= 2"):
        class_conditional_scores(**valid(), min_per_class=1)


def test_reference_rows_need_each_class_asked_for_in_images():
    args = valid()
    images, labels = args["reference_images"], args["reference_labels"]
    with pytest.raises(ValueError, match="class 2 is asked for but images has none"):
        class_reference_rows(images[:6], labels[:6], images, labels, PixelClassifier(), args["asked"])
    with pytest.raises(ValueError, match="labels must have one class per image, 6, got 5"):
        class_reference_rows(images[:6], labels[:5], images, labels, PixelClassifier(), args["asked"])
    with pytest.raises(ValueError, match="need a classifier"):
        class_reference_rows(images, labels, images, labels, FeaturesOnly(), args["asked"])
