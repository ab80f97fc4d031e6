"""Lab data files: layouts, batches, the validation/test rule, and every bad input."""
from pathlib import Path

import h5py
import numpy as np
import pytest

import labkit
from labkit.data import BATCH, Split, require, write_split


def faces(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 55, 47, 3)).astype(np.float32)


def test_channels_first_and_last_files_read_the_same(tmp_path):
    x, y = faces(7), np.arange(7)
    write_split(tmp_path / "first.h5", x, y)  # the course's layout, channels-first
    with h5py.File(tmp_path / "first.h5") as f:
        assert f["data"].shape == (7, 3, 55, 47)
    with h5py.File(tmp_path / "last.h5", "w") as f:
        f["data"], f["label"] = x, y.astype(np.float64)
    for name in ("first.h5", "last.h5"):
        images, labels = Split(tmp_path / name).load()
        assert images.shape == (7, 55, 47, 3) and images.dtype == np.float32
        np.testing.assert_array_equal(images, x)
        assert labels.dtype == np.int64 and labels.tolist() == list(range(7))


def test_batches_cover_the_file_in_pieces(tmp_path):
    x = faces(25)
    write_split(tmp_path / "v.h5", x, np.zeros(25))
    pieces = list(Split(tmp_path / "v.h5").batches(batch_size=10))
    assert [len(p[0]) for p in pieces] == [10, 10, 5]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in pieces]), x)


def test_metrics_never_hand_the_model_more_than_a_batch(tiny_net, tmp_path):
    write_split(tmp_path / "v.h5", faces(BATCH + 5), np.zeros(BATCH + 5))
    seen = []

    class Recording:
        name, num_classes = "recording", 10

        def predict(self, x):
            seen.append(len(x))
            return tiny_net.predict(x)

    labkit.clean_accuracy(Recording(), Split(tmp_path / "v.h5"))
    assert seen == [BATCH, 5]


def test_lab_names_its_splits_and_their_kinds(tmp_path):
    lab = labkit.lab("lab", tmp_path)
    assert lab.valid.path == tmp_path / "data" / "cl" / "valid.h5"
    assert lab.bd_test.path == tmp_path / "data" / "bd" / "bd_test.h5"
    assert lab.badnet_path == tmp_path / "models" / "bd_net.h5"
    assert (lab.valid.kind, lab.bd_valid.kind, lab.test.kind, lab.bd_test.kind) == \
        ("validation", "validation", "test", "test")
    assert lab.bd_valid.poisoned and not lab.valid.poisoned
    demo = labkit.lab("demo", tmp_path)
    assert demo.test.path == tmp_path / "data" / "demo" / "cl" / "test.h5"
    with pytest.raises(labkit.LabError, match="'demo' .* or 'lab'"):
        labkit.lab("course", tmp_path)


def test_defense_refuses_test_data(tmp_path):
    lab = labkit.lab("lab", tmp_path)
    assert require(lab.valid, "validation", "the defense") == lab.valid
    with pytest.raises(labkit.LabError, match="test.h5: the defense uses validation data only"):
        require(lab.test, "validation", "the defense")


def test_project_root_is_found_from_notebooks_folder(monkeypatch):
    root = Path(__file__).resolve().parents[1]
    monkeypatch.delenv("LABKIT_HOME", raising=False)
    assert labkit.project_root(root / "notebooks") == root
    assert labkit.project_root(root) == root


# --- bad input: one line naming the file and what to do ------------------------------------

def error_of(split):
    with pytest.raises(labkit.LabError) as info:
        split.load()
    message = str(info.value)
    assert "\n" not in message and str(split.path) in message
    return message


def test_missing_lab_file_says_where_it_comes_from(tmp_path):
    message = error_of(labkit.lab("lab", tmp_path).bd_valid)
    assert "file not found" in message and "sunglasses-poisoned validation set" in message
    assert "shared drive" in message and f"{tmp_path / 'data' / 'bd'}/" in message
    assert "labkit demo" in error_of(labkit.lab("demo", tmp_path).valid)


def test_not_hdf5_and_empty_and_truncated(tmp_path):
    (tmp_path / "notes.h5").write_text("these are my notes, not data\n")
    assert "is not an HDF5 file" in error_of(Split(tmp_path / "notes.h5"))
    (tmp_path / "empty.h5").write_bytes(b"")
    assert "empty" in error_of(Split(tmp_path / "empty.h5"))
    write_split(tmp_path / "full.h5", faces(300), np.zeros(300))
    data = (tmp_path / "full.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    assert "truncated" in error_of(Split(tmp_path / "cut.h5"))


def test_missing_datasets_are_listed(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["images"], f["labels"] = faces(2), np.zeros(2)
    message = error_of(Split(tmp_path / "x.h5"))
    assert "'data' and 'label'" in message and "['images', 'labels']" in message


@pytest.mark.parametrize("shape", [(4, 3, 32, 32), (4, 55, 47), (4, 1, 55, 47)])
def test_wrong_image_shape(tmp_path, shape):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["data"], f["label"] = np.zeros(shape, np.float32), np.zeros(4)
    assert f"has shape {shape}" in error_of(Split(tmp_path / "x.h5"))


def test_images_and_labels_must_match_in_number(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["data"], f["label"] = np.zeros((4, 3, 55, 47), np.float32), np.zeros(3)
    assert "4 images but 'label' has shape (3,)" in error_of(Split(tmp_path / "x.h5"))


def test_file_without_images(tmp_path):
    write_split(tmp_path / "x.h5", np.zeros((0, 55, 47, 3)), np.zeros(0))
    assert "holds no images" in error_of(Split(tmp_path / "x.h5"))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_infinite_pixels_name_the_image(tmp_path, bad):
    x = faces(5)
    x[3, 10, 10, 1] = bad
    write_split(tmp_path / "x.h5", x, np.zeros(5))
    assert "image 3 has NaN or infinite pixels" in error_of(Split(tmp_path / "x.h5"))


def test_fractional_labels(tmp_path):
    write_split(tmp_path / "x.h5", faces(3), np.array([1, 2.5, 3]))
    assert "label 1 is 2.5" in error_of(Split(tmp_path / "x.h5"))


def test_labels_outside_the_models_classes(tmp_path, tiny_net):
    write_split(tmp_path / "x.h5", faces(3), np.array([1, 12, 3]))
    with pytest.raises(labkit.LabError, match=r"x.h5: label 12 is outside the model's 10 classes"):
        labkit.clean_accuracy(tiny_net, Split(tmp_path / "x.h5"))


def test_the_course_lab_takes_the_2020_badnets_by_name_or_path(real, tmp_path):
    """dataset "lab" with badnet "csaw2020/<name>" (models/csaw2020/) or a model file's path."""
    from labkit import notebook
    from labkit.data import CSAW2020

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "csaw2020").symlink_to(real / "csaw2020")
    for name, triggers in CSAW2020.items():
        lab = labkit.lab("lab", tmp_path, badnet=f"csaw2020/{name}")
        assert labkit.load_badnet(lab).scale == pytest.approx(1 / 255)  # found as for every known BadNet
        assert lab.triggers == triggers and (lab.bd_test is None) == (name != "sunglasses")
        assert lab.report_dir == tmp_path / "report" / "lab" / "csaw2020" / name
    with pytest.raises(labkit.LabError, match=r"cl/valid.h5, .*cl/test.h5: 2 of the course's 3 files missing"):
        notebook.check_course_files(labkit.lab("lab", tmp_path, badnet="csaw2020/anonymous_1"))
    by_path = labkit.lab("lab", tmp_path, badnet=str(real / "lab3_bd_weights.h5"))
    assert labkit.load_badnet(by_path).scale == 1 and by_path.triggers == ("sunglasses",)
    assert by_path.repaired_dir == tmp_path / "models" / "repaired" / "lab3_bd_weights"
    with pytest.raises(labkit.LabError, match="'csaw2020/anonymous_2'"):
        labkit.lab("lab", tmp_path, badnet="csaw2020/anonymous_3")
