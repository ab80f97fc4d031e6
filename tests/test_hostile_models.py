"""Hostile model files: refused before anything runs, is built or is allocated, in one line."""
import json
import shutil
import struct
import zipfile
import zlib

import h5py
import keras
import numpy as np
import pytest
from hostile import refused, run_limited, snapshot

import labkit
from labkit.models import save_model


@pytest.fixture
def saved(tiny_net, tmp_path):
    """The tiny network saved as .h5 and .keras in a folder of its own."""
    folder = tmp_path / "models"
    return {s: save_model(tiny_net, folder / f"m{s}") for s in (".h5", ".keras")}


def eval_refused(capsys, lab, model, expect):
    return refused(capsys, ["eval", lab.valid.path, lab.bd_valid.path, model], expect,
                   model.parent, lab.root)


def edit_config(path, change):
    with h5py.File(path, "a") as f:
        config = json.loads(f.attrs["model_config"])
        f.attrs["model_config"] = json.dumps(change(config) or config)
    return path


def layer(config, name):
    return next(x for x in config["config"]["layers"] if x["config"]["name"] == name)


# --- format ---------------------------------------------------------------------------------

def test_polyglot_hdf5_and_zip_is_refused(saved, tiny_lab, capsys):
    path = saved[".h5"].with_name("poly.keras")
    with zipfile.ZipFile(saved[".keras"]) as z, zipfile.ZipFile(path, "w") as out:
        for name in z.namelist():
            out.writestr(name, z.read(name))
    zipped = path.read_bytes()
    path.write_bytes(saved[".h5"].read_bytes() + zipped)  # HDF5 at the start, a zip at the end
    assert h5py.is_hdf5(path) and zipfile.is_zipfile(path)
    eval_refused(capsys, tiny_lab, path, "both an HDF5 file and a zip archive")


def test_name_must_agree_with_the_content(saved, tiny_lab, capsys):
    shutil.copy(saved[".h5"], saved[".h5"].with_name("h5inside.keras"))
    eval_refused(capsys, tiny_lab, saved[".h5"].with_name("h5inside.keras"),
                 "is an HDF5 model but its name ends in .keras; rename it to end in .h5")


# --- bombs ----------------------------------------------------------------------------------

def zip_bomb(path, config: bytes, inflated: int):
    """A .keras archive whose weights member inflates to `inflated` bytes of zeros; built
    from one compressed block repeated, so writing it costs a few MB and a moment."""
    block = bytes(16 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    stream = piece * (inflated // len(block)) + c.flush()
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", config)
        info = zipfile.ZipInfo("model.weights.h5")
        z.writestr(info, stream)  # stored; patched to 'deflated, N bytes' below
    data = bytearray(path.read_bytes())
    size = len(block) * (inflated // len(block))
    local = data.index(b"PK\x03\x04model.weights.h5"[:4], data.index(b"model.weights.h5") - 30)
    struct.pack_into("<H", data, local + 8, 8)
    struct.pack_into("<I", data, local + 22, size)
    central = data.index(b"PK\x01\x02", local + 30 + len(stream))
    central = data.index(b"PK\x01\x02", central + 1) if data[central + 46:central + 57] == b"config.json" else central
    struct.pack_into("<H", data, central + 10, 8)
    struct.pack_into("<I", data, central + 24, size)
    path.write_bytes(bytes(data))
    return path


def test_zip_bomb_is_refused_before_inflating_in_bounded_memory(saved, tiny_lab):
    with zipfile.ZipFile(saved[".keras"]) as z:
        config = z.read("config.json")
    bomb = zip_bomb(saved[".keras"].with_name("bomb.keras"), config, 3 << 30)
    assert bomb.stat().st_size < 8 << 20
    with zipfile.ZipFile(bomb) as z:
        assert z.getinfo("model.weights.h5").file_size == 3 << 30
    before = snapshot(bomb.parent)
    code, out, err = run_limited(["eval", tiny_lab.valid.path, tiny_lab.bd_valid.path, bomb],
                                 memory_mb=1024)
    assert code == 2 and "zip bomb" in err and err.count("\n") == 1, err
    assert snapshot(bomb.parent) == before


def test_weights_header_declaring_a_huge_layer_is_not_allocated(tmp_path, tiny_lab):
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as f:  # a weights file whose output layer claims 10^8 classes
        f.attrs["layer_names"] = [b"output"]
        g = f.create_group("output")
        g.attrs["weight_names"] = [b"kernel:0", b"bias:0"]
        g.create_dataset("kernel:0", (160, 10**8), np.float32, chunks=(160, 1024))
        g.create_dataset("bias:0", (10**8,), np.float32, chunks=(1024,))
    code, _, err = run_limited(["eval", tiny_lab.valid.path, tiny_lab.bd_valid.path, path],
                               memory_mb=1024)
    assert code == 2 and "far more than the lab's network has" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("name, key, value", [("fc_1", "units", 10**9), ("conv_2", "filters", 10**8),
                                              ("output", "units", 10**8)])
def test_config_declaring_huge_layers_is_refused_before_building(saved, tiny_lab, capsys,
                                                                  name, key, value):
    path = edit_config(saved[".h5"], lambda c: layer(c, name)["config"].__setitem__(key, value))
    eval_refused(capsys, tiny_lab, path, f"layer {name} declares {key} = {value}")


# --- malformed configurations ----------------------------------------------------------------

@pytest.mark.parametrize("raw, expect", [
    (b"\xff\xfe{not utf-8", "configuration is not UTF-8 text"),
    (b"{'single': quotes}", "configuration is not valid JSON"),
    (b"null", "not a Keras functional model"),
    (b"[1, 2, 3]", "not a Keras functional model"),
    (b'{"class_name": "Functional", "config": "a string"}', "not a Keras functional model"),
    (b'{"class_name": "Functional", "config": {"layers": ["conv_1"]}}', "layer 0 of the model's configuration is malformed"),
])
def test_malformed_config(saved, tiny_lab, capsys, raw, expect):
    with h5py.File(saved[".h5"], "a") as f:
        f.attrs["model_config"] = raw
    eval_refused(capsys, tiny_lab, saved[".h5"], expect)


def replace_member(path, member: str, data: bytes):
    """Rewrite the .keras archive `path` with `member` holding `data` (the rest unchanged)."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members[member] = data
    with zipfile.ZipFile(path, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    return path


def test_malformed_keras_config(saved, tiny_lab, capsys):
    path = replace_member(saved[".keras"], "config.json", b"\x80\x81 not text")
    eval_refused(capsys, tiny_lab, path, "configuration is not UTF-8 text")


def test_activation_given_as_a_dict_asks_for_code(saved, tiny_lab, capsys):
    evil = {"class_name": "function", "config": "os.system", "module": "os"}
    path = edit_config(saved[".h5"], lambda c: layer(c, "conv_2")["config"].__setitem__("activation", evil))
    line = eval_refused(capsys, tiny_lab, path, "asks for code labkit will not run")
    assert "conv_2 (activation {'class_name'" in line


def test_unknown_class_asks_for_code(saved, tiny_lab, capsys):
    path = edit_config(saved[".h5"], lambda c: layer(c, "conv_3").__setitem__("class_name", "Evil"))
    line = eval_refused(capsys, tiny_lab, path, "the file asks for code labkit will not run: conv_3 (Evil)")
    assert "custom" not in line


@pytest.mark.parametrize("value, expect", [("abc", "'abc', not a number"),
                                           (np.array([1.0, 2.0]), "array([1., 2.]), not a number")])
def test_scale_stored_as_string_or_array(saved, tiny_lab, capsys, value, expect):
    with h5py.File(saved[".h5"], "a") as f:
        f.attrs["labkit_input_scale"] = value
    eval_refused(capsys, tiny_lab, saved[".h5"], f"input scale saved in the file is {expect}")


def test_scale_in_keras_archive_as_string(saved, tiny_lab, capsys):
    path = replace_member(saved[".keras"], "labkit.json", b'{"input_scale": "1/255"}')
    eval_refused(capsys, tiny_lab, path, "input scale saved in the file is '1/255', not a number")


def test_missing_weight_group_weight_names_and_dangling_names(saved, tiny_lab, capsys):
    path = saved[".h5"]
    original = path.read_bytes()
    with h5py.File(path, "a") as f:
        del f["model_weights/conv_3"]
    eval_refused(capsys, tiny_lab, path, "the weights of layer conv_3 are missing")
    path.write_bytes(original)
    with h5py.File(path, "a") as f:
        del f["model_weights/fc_1"].attrs["weight_names"]
    eval_refused(capsys, tiny_lab, path, "the weights of layer fc_1 are missing")
    path.write_bytes(original)
    with h5py.File(path, "a") as f:
        f["model_weights/conv_1"].attrs["weight_names"] = [b"conv_1/kernel", b"nowhere/bias"]
    eval_refused(capsys, tiny_lab, path, "layer conv_1 names a weight nowhere/bias that is not in the file")


def test_zero_classes(tmp_path, tiny_lab, capsys):
    path = tmp_path / "zero.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in labkit.models.WEIGHTED_LAYERS]
        for name in labkit.models.WEIGHTED_LAYERS:
            g = f.create_group(name)
            g.attrs["weight_names"] = [b"kernel:0", b"bias:0"]
            g["kernel:0"], g["bias:0"] = np.zeros((1, 0), np.float32), np.zeros(0, np.float32)
    eval_refused(capsys, tiny_lab, path, "the output layer has 0 classes")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_infinite_weights(saved, tiny_lab, capsys, bad):
    with h5py.File(saved[".h5"], "a") as f:
        name = labkit.modelfile._text(f["model_weights/conv_2"].attrs["weight_names"][0])
        w = f["model_weights/conv_2"][name]
        values = w[()]
        values[0, 0, 0, 0] = bad
        w[...] = values
    eval_refused(capsys, tiny_lab, saved[".h5"], "weights with NaN or infinite values")


# --- networks that are not the lab's ---------------------------------------------------------

def test_skip_connection_is_refused(tiny_lab, tmp_path, capsys):
    from keras import layers
    model = labkit.build_badnet(10)
    pool_2 = model.get_layer("pool_2").output
    skip = layers.Dense(160, name="skip")(layers.Flatten(name="flat_skip")(pool_2))
    head = layers.Add(name="add_1")([model.get_layer("fc_1").output, model.get_layer("fc_2").output, skip])
    out = layers.Dense(10, activation="softmax", name="output")(layers.Activation("relu")(head))
    x = model.input
    keras.Model(x, out).save(tmp_path / "skip.h5")
    eval_refused(capsys, tiny_lab, tmp_path / "skip.h5", "not the lab's network")


def test_other_input_size_is_refused_before_building(saved, tiny_lab, capsys):
    def bigger(config):
        cfg = layer(config, "input")["config"]
        cfg[next(k for k in ("batch_shape", "batch_input_shape") if k in cfg)] = [None, 64, 64, 3]
    path = edit_config(saved[".h5"], bigger)
    eval_refused(capsys, tiny_lab, path, "not the lab's network: layer conv_1 has other sizes or connections")


def test_the_real_models_still_load(real):
    for name in ("lab3_bd_weights.h5", "legacy_keras24_full_model.h5"):
        assert labkit.load_model(real / name).num_classes == 1283
