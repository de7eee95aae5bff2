"""Loading data: image folders and their archives, clear errors, held-out splits."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import torch
from cifarlab.data import DataError, load_data, sample

from .conftest import CLASSES, make_jpeg_folder, make_targz


def _dominant_channel(images: torch.Tensor) -> torch.Tensor:
    return images.float().mean((2, 3)).argmax(1)


def test_image_folder_and_its_targz_give_the_same_images_and_labels(jpeg_folder: Path, jpeg_targz: Path) -> None:
    a = load_data(str(jpeg_folder), holdout=0.5, cache=False)
    b = load_data(str(jpeg_targz), holdout=0.5, cache=False)
    assert a.classes == b.classes == sorted(CLASSES)
    assert a.train.images.shape == (9, 3, 32, 32) and a.train.images.dtype == torch.uint8
    assert torch.equal(a.train.labels, b.train.labels)
    assert torch.equal(a.train.images, b.train.images)
    # cat is red, dog green, ship blue: the label must match the colour of its pixels
    assert torch.equal(_dominant_channel(a.train.images), a.train.labels.clone().apply_(lambda k: (0, 1, 2)[k]))
    assert torch.equal(a.test.images, b.test.images) and len(a.test) == 9


def test_archive_is_read_without_unpacking(tmp_path: Path, jpeg_targz: Path) -> None:
    before = set(tmp_path.rglob("*"))
    load_data(str(jpeg_targz), cache=False)
    assert set(tmp_path.rglob("*")) == before


def test_a_test_split_is_used_when_present(tmp_path: Path) -> None:
    folder = make_jpeg_folder(tmp_path / "withtest", per_class=4, with_test=True)
    data = load_data(str(make_targz(folder, tmp_path / "withtest.tgz")))
    assert len(data.train) == 12 and len(data.test) == 6
    assert data.note == ""


def test_holdout_is_deterministic_by_seed_and_disjoint(jpeg_folder: Path) -> None:
    a = load_data(str(jpeg_folder), holdout=0.25, seed=3)
    b = load_data(str(jpeg_folder), holdout=0.25, seed=3)
    c = load_data(str(jpeg_folder), holdout=0.25, seed=4)
    assert len(a.test) == 4 and len(a.train) == 14
    assert torch.equal(a.test.images, b.test.images)
    assert not torch.equal(a.test.images, c.test.images)


def test_no_test_split_means_a_default_holdout_with_a_note(jpeg_folder: Path) -> None:
    data = load_data(str(jpeg_folder))
    assert len(data.test) == 2
    assert "holding out 10%" in data.note


def test_missing_dataset_names_the_path_and_the_layout(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tar.gz"
    with pytest.raises(DataError) as err:
        load_data(str(missing))
    assert str(missing) in str(err.value) and "train/<class>/*.jpg" in str(err.value)


def test_archive_without_train_folder_is_explained(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    (tmp_path / "x.txt").write_text("hello")
    with tarfile.open(bad, "w:gz") as tar:
        tar.add(tmp_path / "x.txt", arcname="images/x.txt")
    with pytest.raises(DataError, match=r"no training images found in .*bad\.tar\.gz.*train/<class>"):
        load_data(str(bad))


def test_corrupt_archive_is_explained(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    with pytest.raises(DataError, match="cannot read the archive"):
        load_data(str(bad))


def test_undecodable_image_is_explained(tmp_path: Path, jpeg_folder: Path) -> None:
    (jpeg_folder / "train" / "cat" / "9999.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="could not be decoded"):
        load_data(str(jpeg_folder), cache=False)


def test_synthetic_data_is_repeatable_and_balanced() -> None:
    a, b = load_data("synthetic:100"), load_data("synthetic:100")
    assert torch.equal(a.train.images, b.train.images)
    assert torch.bincount(a.train.labels).tolist() == [10] * 10


def test_bad_synthetic_spec_is_explained() -> None:
    with pytest.raises(DataError, match="synthetic:N"):
        load_data("synthetic:many")


def test_image_dataset_feeds_a_dataloader_through_torchvision_transforms(jpeg_folder: Path) -> None:
    transforms = pytest.importorskip("torchvision.transforms", reason="the notebook's transforms need torchvision")
    data = load_data(str(jpeg_folder), holdout=0.25, seed=0, cache=False)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    dataset = data.dataset("train", transform)
    assert dataset.classes == data.classes and len(dataset) == len(data.train)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=False)
    images, labels = next(iter(loader))
    assert images.dtype == torch.float32 and images.shape == (4, 3, 32, 32)
    assert torch.equal(labels, data.train.labels[:4])
    torch.testing.assert_close(images, data.train.images[:4].float() / 255 * 2 - 1)  # ToTensor, then to [-1, 1]


def test_subset_draws_at_random_and_the_same_rows_for_the_same_seed(jpeg_folder: Path) -> None:
    data = load_data(str(jpeg_folder), holdout=0.25, seed=0, cache=False)
    small = data.subset(6, 2, seed=3)
    assert len(small.train) == 6 and len(small.test) == 2
    rows = sample(len(data.train), 6, seed=3)
    assert torch.equal(small.train.images, data.train.images[rows])
    assert torch.equal(small.train.labels, data.train.labels[rows])
    assert torch.equal(rows, sample(len(data.train), 6, seed=3)) and not torch.equal(rows, torch.arange(6))
    assert torch.equal(sample(5, None), torch.arange(5)) and torch.equal(sample(5, 9), torch.arange(5))
    whole = data.subset()
    assert torch.equal(whole.train.images, data.train.images) and whole.classes == data.classes
