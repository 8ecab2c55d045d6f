"""dataset = "npz": a user's own arrays from the file data-dir names, every fact (classes, image
shape, train size) read from the file, each problem one line naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fedkd
from fedkd.config import DataConfig
from fedkd.data.sources import clear_dataset_cache, dataset_spec, load_dataset
from fedkd.errors import DataError


@pytest.fixture(autouse=True)
def fresh_cache():
    yield
    clear_dataset_cache()


def five_digits(path: Path, **changes: np.ndarray) -> Path:
    """scikit-learn's digits 0..4 as float (N, H, W) images in 0..1, with ``changes`` over them."""
    digits = load_dataset("digits")
    train, test = digits.train_y < 5, digits.test_y < 5
    arrays = {
        "x_train": digits.train_x[train, 0] / 255.0,
        "y_train": digits.train_y[train],
        "x_test": digits.test_x[test, 0] / 255.0,
        "y_test": digits.test_y[test],
        "class_names": np.array(["zero", "one", "two", "three", "four"]),
    }
    np.savez(path, **{**arrays, **changes})
    return path


def test_the_spec_comes_from_the_file_and_floats_become_the_same_uint8_images(tmp_path):
    path = five_digits(tmp_path / "five.npz")
    spec = dataset_spec(DataConfig(dataset="npz", data_dir=str(path)))
    assert (spec.num_classes, spec.input_shape, spec.class_names[4]) == (5, (1, 8, 8), "four")
    data = load_dataset("npz", str(path))
    digits = load_dataset("digits")
    assert spec.train_size == len(data.train_y) == int((digits.train_y < 5).sum())
    assert data.train_x.dtype == np.uint8 and np.array_equal(data.train_x, digits.train_x[digits.train_y < 5])


def test_a_run_on_a_five_class_file_trains_and_names_it(tmp_path):
    path = five_digits(tmp_path / "five.npz")
    results = fedkd.run(
        dataset="npz",
        data_dir=str(path),
        num_clients=3,
        rounds=1,
        local_epochs=1,
        transfer_size=60,
        engine="inprocess",
        worker_pool="threads",
        out=tmp_path / "run",
    )
    assert results.payload["run_config"]["data-dir"] == str(path) and 0 < results.final["alma"] <= 1
    assert sorted(results.rounds[0]["client_acc"]) == [0, 1, 2]


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"y_test": None}, "no y_test; allowed: a .npz with x_train, y_train, x_test, y_test"),
        ({"x_train": np.zeros((10, 64))}, "x_train has shape (10, 64); allowed: (N, H, W) or (N, C, H, W)"),
        ({"x_test": np.full((5, 8, 8), 2.0)}, "x_test holds float64 values from 2.0 to 2.0; allowed: uint8"),
        ({"y_train": np.zeros(3, np.int64)}, "y_train is int64 of shape (3,); allowed: 721 integer labels"),
        ({"y_train": np.zeros(721)}, "y_train is float64 of shape (721,); allowed: 721 integer labels"),
        ({"y_test": np.full(180, -1)}, "y_test holds label -1; allowed: 0 and above"),
        (
            {"x_test": np.zeros((180, 1, 4, 4), np.uint8)},
            "but x_test images (1, 4, 4); allowed: one (C, H, W)",
        ),
        ({"class_names": np.array(["a", "b"])}, "class_names is <U1 of shape (2,); allowed: 5 strings"),
    ],
)
def test_a_bad_file_is_one_line_naming_it_and_what_is_allowed(tmp_path, changes, says):
    path = five_digits(tmp_path / "bad.npz", **{k: v for k, v in changes.items() if v is not None})
    if any(v is None for v in changes.values()):  # drop the array instead
        with np.load(path) as arrays:
            np.savez(path, **{k: arrays[k] for k in arrays.files if k not in changes})
    with pytest.raises(DataError) as caught:
        load_dataset("npz", str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and says in message and "\n" not in message


@pytest.mark.parametrize("where", ["", "folder", "missing.npz", "text.npz"])
def test_data_dir_must_name_a_readable_npz_file(tmp_path, monkeypatch, where):
    monkeypatch.delenv("FEDKD_DATA_DIR", raising=False)
    (tmp_path / "text.npz").write_text("not a zip")
    (tmp_path / "folder").mkdir()
    data_dir = str(tmp_path / where) if where else ""
    with pytest.raises(DataError, match="npz") as caught:
        fedkd.make_config(dataset="npz", data_dir=data_dir)  # validation reads the file's classes
    message = str(caught.value)
    assert "\n" not in message
    if where == "text.npz":
        assert message.startswith(f"{tmp_path / where}: not a readable .npz file")
    else:
        assert "allowed: the path of a .npz file holding x_train, y_train, x_test, y_test" in message
