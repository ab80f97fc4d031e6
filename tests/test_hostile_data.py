"""Hostile lab data files: each is refused where it is opened, with its real cause named."""
import h5py
import numpy as np
import pytest
from hostile import refused

import labkit
from labkit.data import Split


def faces(n=4):
    return np.random.default_rng(0).uniform(0, 255, (n, 3, 55, 47)).astype(np.float32)


def write(path, data=None, label=None):
    with h5py.File(path, "w") as f:
        f["data"] = faces() if data is None else data
        f["label"] = np.zeros(4) if label is None else label
    return path


def bad_dtype(kind):
    n = 4 * 3 * 55 * 47
    values = {"boolean": np.zeros(n, bool), "complex": np.zeros(n, np.complex64),
              "string": np.full(n, b"ab"),
              "compound": np.zeros(n, [("a", "f4"), ("b", "f4")])}[kind]
    return values.reshape(4, 3, 55, 47)


@pytest.mark.parametrize("kind", ["boolean", "complex", "string", "compound"])
def test_data_of_the_wrong_dtype(tmp_path, tiny_lab, capsys, kind):
    path = write(tmp_path / "x.h5", bad_dtype(kind))
    refused(capsys, ["eval", path, tiny_lab.bd_valid.path, tiny_lab.badnet_path],
            f"x.h5: 'data' holds {kind} values, not numbers", tmp_path)


def test_object_dtype_labels(tmp_path, tiny_lab, capsys):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["data"] = faces()
        f.create_dataset("label", (4,), dtype=h5py.string_dtype())
    refused(capsys, ["eval", path, tiny_lab.bd_valid.path, tiny_lab.badnet_path],
            "'label' holds object values", tmp_path)


def test_group_instead_of_a_dataset(tmp_path, tiny_lab, capsys):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_group("data")
        f["label"] = np.zeros(4)
    refused(capsys, ["eval", path, tiny_lab.bd_valid.path, tiny_lab.badnet_path],
            "'data' is a group, not a dataset", tmp_path)


@pytest.mark.parametrize("value, shown", [(1e30, "1e+30"), (-500, "-500")])
def test_pixels_far_outside_0_255(tmp_path, tiny_lab, capsys, value, shown):
    x = faces()
    x[2, 1, 3, 4] = value
    path = write(tmp_path / "x.h5", x)
    refused(capsys, ["eval", path, tiny_lab.bd_valid.path, tiny_lab.badnet_path],
            f"image 2 has pixels outside 0..255 (e.g. {shown})", tmp_path)


@pytest.mark.parametrize("labels", [np.array([0, 1, 2**63 + 5, 3], np.uint64),
                                    np.array([0, 1, 1e30, 3]), np.array([0, 1, -1, 3])])
def test_labels_that_overflow_or_are_negative(tmp_path, tiny_lab, capsys, labels):
    path = write(tmp_path / "x.h5", label=labels)
    refused(capsys, ["eval", path, tiny_lab.bd_valid.path, tiny_lab.badnet_path],
            "label 2 is", tmp_path)


def test_header_claiming_billions_of_images_is_refused_before_reading(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("data", (10**10, 3, 55, 47), np.float32, chunks=(1, 3, 55, 47),
                         compression="gzip")
        f.create_dataset("label", (10**10,), np.float64, chunks=(1024,), compression="gzip")
    with pytest.raises(labkit.LabError, match="declares 10000000000 images"):
        Split(tmp_path / "x.h5").labels()


def test_unwritten_data_is_not_read_as_zeros(tmp_path, tiny_lab, capsys):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("data", (4, 3, 55, 47), np.float32, chunks=(1, 3, 55, 47))
        f["data"][:2] = faces(2)  # images 2 and 3 were never written
        f["label"] = np.zeros(4)
    refused(capsys, ["eval", tmp_path / "x.h5", tiny_lab.bd_valid.path, tiny_lab.badnet_path],
            "'data' declares 4 entries but stores only part of them", tmp_path)


def test_virtual_dataset_with_a_missing_source(tmp_path, tiny_lab, capsys):
    write(tmp_path / "source.h5")
    layout = h5py.VirtualLayout((4, 3, 55, 47), np.float32)
    layout[:] = h5py.VirtualSource(tmp_path / "source.h5", "data", (4, 3, 55, 47))
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_virtual_dataset("data", layout, fillvalue=0)
        f["label"] = np.zeros(4)
    (tmp_path / "source.h5").unlink()
    refused(capsys, ["eval", tmp_path / "x.h5", tiny_lab.bd_valid.path, tiny_lab.badnet_path],
            "'data' is a virtual dataset drawing on", tmp_path)


def test_dangling_external_link(tmp_path, tiny_lab, capsys):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["data"] = h5py.ExternalLink("gone.h5", "/data")
        f["label"] = np.zeros(4)
    refused(capsys, ["eval", tmp_path / "x.h5", tiny_lab.bd_valid.path, tiny_lab.badnet_path],
            "'data' is a link to /data in another file (gone.h5)", tmp_path)


def test_soft_link_cycle(tmp_path, tiny_lab, capsys):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["data"] = h5py.SoftLink("/loop")
        f["loop"] = h5py.SoftLink("/data")
        f["label"] = np.zeros(4)
    refused(capsys, ["eval", tmp_path / "x.h5", tiny_lab.bd_valid.path, tiny_lab.badnet_path],
            "'data' is a link to /loop that cannot be followed", tmp_path)


def test_external_raw_storage(tmp_path, tiny_lab, capsys):
    (tmp_path / "raw.bin").write_bytes(faces().tobytes())
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("data", (4, 3, 55, 47), np.float32,
                         external=[(str(tmp_path / "raw.bin"), 0, h5py.h5f.UNLIMITED)])
        f["label"] = np.zeros(4)
    refused(capsys, ["eval", tmp_path / "x.h5", tiny_lab.bd_valid.path, tiny_lab.badnet_path],
            "'data' keeps its values in other files", tmp_path)


def test_filter_that_needs_a_plugin(tmp_path, tiny_lab, capsys):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("data", data=faces(), chunks=True, compression=32004,  # LZ4 plugin
                         allow_unknown_filter=True)
        f["label"] = np.zeros(4)
    refused(capsys, ["eval", tmp_path / "x.h5", tiny_lab.bd_valid.path, tiny_lab.badnet_path],
            "'data' is compressed with filter 32004", tmp_path)


def test_a_good_file_still_reads(tmp_path):
    x = faces()
    images, labels = Split(write(tmp_path / "ok.h5", x, np.arange(4.0))).load()
    np.testing.assert_array_equal(images, x.transpose(0, 2, 3, 1))
    assert labels.tolist() == [0, 1, 2, 3]
