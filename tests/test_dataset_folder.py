"""The ``folder`` dataset plugin: image folders of PNGs written by the tests, flat or with class
subfolders, split or not, with the layout errors a user makes."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from bench import datasets
from bench.datasets import DatasetFormatError, DatasetNotFoundError
from tests.helpers import as_uint8


def write_png(path: Path, value: int | tuple[int, int, int], size: tuple[int, int] = (6, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if isinstance(value, int) else "RGB"
    Image.new(mode, size, value).save(path)




def test_flat_grayscale_folder_is_split_and_unlabeled(tmp_path):
    for i in range(10):
        write_png(tmp_path / f"img{i:02d}.png", 25 * i)
    (tmp_path / "notes.txt").write_text("not an image")
    data = datasets.load("folder", root=tmp_path)
    assert data.image_shape == (1, 6, 6) and data.num_train == 9 and data.num_test == 1
    assert data.train_labels is None and data.test_labels is None and data.num_classes is None
    values = torch.cat([data.train_images, data.test_images])[:, 0, 0, 0]
    assert sorted(as_uint8(values).tolist()) == [25 * i for i in range(10)]
    assert data.train_images.min().item() == -1.0
    again = datasets.load("folder", root=tmp_path)
    assert torch.equal(again.test_images, data.test_images)


def test_train_test_class_folders_give_labels_and_rgb(tmp_path):
    write_png(tmp_path / "train" / "dog" / "a.png", (255, 0, 0))
    write_png(tmp_path / "train" / "dog" / "b.png", 128)  # one grayscale image in an RGB set
    write_png(tmp_path / "train" / "cat" / "c.png", (0, 255, 0))
    write_png(tmp_path / "test" / "cat" / "d.png", (0, 0, 255))
    data = datasets.load("folder", root=str(tmp_path))
    assert data.image_shape == (3, 6, 6) and data.num_train == 3 and data.num_test == 1
    assert data.class_names == ("cat", "dog") and data.num_classes == 2
    assert data.train_labels.tolist() == [0, 1, 1]  # cat/c, dog/a, dog/b
    assert as_uint8(data.train_images[:, :, 0, 0]).tolist() == [[0, 255, 0], [255, 0, 0], [128, 128, 128]]
    assert data.test_labels.tolist() == [0]


def test_class_folders_without_split_are_stratified(tmp_path):
    for cls in ("a", "b"):
        for i in range(10):
            write_png(tmp_path / cls / f"{i}.png", i)
    data = datasets.load("folder", root=tmp_path)
    assert data.test_labels.bincount().tolist() == [1, 1] and data.train_labels.bincount().tolist() == [9, 9]


def test_mixed_sizes_need_image_size(tmp_path):
    write_png(tmp_path / "train" / "a.png", 10, size=(8, 8))
    write_png(tmp_path / "train" / "b.png", 20, size=(12, 6))
    write_png(tmp_path / "test" / "c.png", 30, size=(5, 5))
    with pytest.raises(DatasetFormatError, match="different sizes.*image_size"):
        datasets.load("folder", root=tmp_path)
    data = datasets.load("folder", root=tmp_path, image_size=4)
    assert data.image_shape == (1, 4, 4)
    # constant images stay constant through center crop and resize
    assert as_uint8(data.train_images).reshape(2, -1).tolist() == [[10] * 16, [20] * 16]


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no pictures here")
    with pytest.raises(DatasetNotFoundError, match="no images found in"):
        datasets.load("folder", root=tmp_path)


def test_unreadable_image_is_named(tmp_path):
    write_png(tmp_path / "good.png", 10)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(DatasetFormatError, match="cannot read image .*broken.png"):
        datasets.load("folder", root=tmp_path)


def test_folder_layout_errors(tmp_path):
    with pytest.raises(ValueError, match="needs root"):
        datasets.load("folder")
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        datasets.load("folder", root=tmp_path / "nowhere")
    write_png(tmp_path / "train" / "a.png", 1)
    write_png(tmp_path / "train" / "b.png", 2)
    with pytest.raises(DatasetNotFoundError, match="test"):
        datasets.load("folder", root=tmp_path)
