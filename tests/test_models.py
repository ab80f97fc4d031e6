"""The lab's network: every file form a student meets, safe loading, input scaling, saving."""
import json

import h5py
import keras
import numpy as np
import pytest

import labkit
from labkit.modelfile import load_model
from labkit.models import LAB_LAYERS, RAW, UNIT, copy_net, save_model


def faces(n, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (n, 55, 47, 3)).astype(np.float32)


def test_architecture_has_the_labs_layers_and_shapes():
    model = labkit.build_badnet(1283)
    assert all(model.get_layer(name) for name in LAB_LAYERS)
    assert tuple(model.get_layer("pool_3").output.shape[1:]) == (5, 4, 60)
    assert tuple(model.get_layer("conv_4").output.shape[1:]) == (4, 3, 80)
    assert model.count_params() == 601_643  # as the course's bd_net.h5 reports
    assert labkit.build_badnet(7).output_shape == (None, 7)


# --- the real files of the course (../shared/real) ------------------------------------------

def test_real_weights_file_loads_with_class_count_from_the_file(real):
    net = load_model(real / "lab3_bd_weights.h5")
    assert net.num_classes == 1283
    assert net.scale == RAW and "lab3" in net.scale_source
    with h5py.File(real / "lab3_bd_weights.h5") as f:
        np.testing.assert_array_equal(net.model.get_layer("conv_3").get_weights()[0],
                                      f["conv_3"]["conv_3"]["kernel:0"][()])


def test_legacy_full_model_equals_lab3_weights_with_its_channels_zeroed(real):
    full = load_model(real / "legacy_keras24_full_model.h5")
    weights = load_model(real / "lab3_bd_weights.h5")
    kernel, bias = full.model.get_layer("conv_3").get_weights()
    zeroed = np.flatnonzero(~kernel.any(axis=(0, 1, 2)) & (bias == 0))
    assert len(zeroed) == 52
    k, b = weights.model.get_layer("conv_3").get_weights()
    k[..., zeroed], b[zeroed] = 0, 0
    weights.model.get_layer("conv_3").set_weights([k, b])
    x = faces(300)
    np.testing.assert_array_equal(full.predict(x), weights.predict(x))


def test_same_weights_loaded_as_full_model_and_as_weights_file_agree(real, tmp_path):
    with h5py.File(real / "legacy_keras24_full_model.h5") as src, \
            h5py.File(tmp_path / "weights.h5", "w") as dst:
        for key in src["model_weights"]:
            src.copy(src["model_weights"][key], dst, key)
        dst.attrs.update(src["model_weights"].attrs)
    full = load_model(real / "legacy_keras24_full_model.h5")
    weights = load_model(tmp_path / "weights.h5")
    x = faces(200)
    np.testing.assert_array_equal(full.predict(x), weights.predict(x))


@pytest.mark.parametrize("name", ["sunglasses", "anonymous_1", "anonymous_2",
                                  "multi_trigger_multi_target"])
def test_csaw_badnets_get_pixels_over_255(real, name):
    net = load_model(real / "csaw2020" / f"{name}_bd_weights.h5")
    assert net.scale == pytest.approx(UNIT) and "CSAW-HackML-2020" in net.scale_source
    assert load_model(real / "csaw2020" / f"{name}_bd_weights.h5", scale=1).scale == 1


def test_scale_is_applied_before_the_network(real):
    net = load_model(real / "csaw2020" / "sunglasses_bd_weights.h5")
    x = faces(50)
    expected = np.argmax(net.model.predict(x / 255, verbose=0), axis=1)
    np.testing.assert_array_equal(net.predict(x), expected)


# --- saving ----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_save_and_load_keep_predictions_and_scale(tiny_net, tmp_path, suffix):
    net = copy_net(tiny_net)
    net.scale = UNIT
    path = save_model(net, tmp_path / f"net{suffix}")
    back = load_model(path)
    assert back.scale == pytest.approx(UNIT) and back.scale_source == "saved with the model"
    x = faces(64)
    np.testing.assert_array_equal(back.predict(x), net.predict(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"net{suffix}"]  # no temp files left


def test_h5_saves_are_in_the_courses_full_model_format(tiny_net, tmp_path):
    save_model(tiny_net, tmp_path / "bd_net.h5")
    with h5py.File(tmp_path / "bd_net.h5") as f:
        assert "model_config" in f.attrs and "model_weights" in f
        names = [layer["config"]["name"] for layer in json.loads(f.attrs["model_config"])["config"]["layers"]]
    assert [n for n in names if n in LAB_LAYERS] == list(LAB_LAYERS)


def test_save_refuses_to_overwrite_the_input_model(tiny_net, tmp_path):
    path = save_model(tiny_net, tmp_path / "bd_net.h5")
    before = path.read_bytes()
    with pytest.raises(labkit.LabError, match="refusing to overwrite an input file"):
        save_model(tiny_net, path, protect=(path,))
    assert path.read_bytes() == before


def test_copy_is_independent(tiny_net):
    twin = copy_net(tiny_net)
    twin.model.get_layer("conv_3").set_weights([np.zeros((3, 3, 40, 60)), np.zeros(60)])
    assert tiny_net.model.get_layer("conv_3").get_weights()[0].any()


# --- bad and untrusted models ----------------------------------------------------------------

def lambda_model():
    inp = keras.Input((55, 47, 3), name="input")
    out = keras.layers.Lambda(lambda t: t * 2, name="sneaky")(inp)
    return keras.Model(inp, keras.layers.Flatten()(out))


def load_error(path, **kwargs):
    with pytest.raises(labkit.LabError) as info:
        load_model(path, **kwargs)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_lambda_layer_is_refused_unless_trusted(tmp_path, suffix):
    path = tmp_path / f"evil{suffix}"
    lambda_model().save(path)
    message = load_error(path)
    assert "refused" in message and "sneaky (Lambda)" in message and "trust" in message
    # trusted, it loads as far as the architecture check (it is not the lab's network)
    assert "not the lab's network" in load_error(path, trust=True)


def test_unknown_layer_class_is_refused_without_importing_anything(tiny_net, tmp_path):
    path = save_model(tiny_net, tmp_path / "custom.h5")
    with h5py.File(path, "a") as f:
        config = json.loads(f.attrs["model_config"])
        conv_3 = next(lay for lay in config["config"]["layers"] if lay["config"]["name"] == "conv_3")
        conv_3["class_name"] = "os.system"
        f.attrs["model_config"] = json.dumps(config)
    assert "conv_3 (os.system)" in load_error(path)


def test_model_without_the_labs_layers_lists_what_it_has(tmp_path):
    inp = keras.Input((55, 47, 3), name="input")
    out = keras.layers.Dense(3, name="head")(keras.layers.Flatten(name="flat")(inp))
    keras.Model(inp, out).save(tmp_path / "other.keras")
    message = load_error(tmp_path / "other.keras")
    assert "lacks conv_1" in message and "its layers are input, flat, head" in message


def test_weights_file_without_the_labs_layers(tmp_path):
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f.attrs["layer_names"] = [b"dense_1"]
    assert "lacks conv_1" in load_error(tmp_path / "w.h5")


def test_missing_empty_and_non_model_files(tmp_path):
    assert "model file not found" in load_error(tmp_path / "bd_net.h5")
    (tmp_path / "empty.h5").write_bytes(b"")
    assert "empty" in load_error(tmp_path / "empty.h5")
    (tmp_path / "text.h5").write_text("hello")
    assert "not a model file" in load_error(tmp_path / "text.h5")
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f["data"] = np.zeros(3)
    assert "neither a Keras model nor a weights file (top-level keys: data)" in \
        load_error(tmp_path / "data.h5")


def test_truncated_model(tiny_net, tmp_path):
    data = save_model(tiny_net, tmp_path / "m.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    message = load_error(tmp_path / "cut.h5")
    assert "truncated" in message or "could not load" in message


def test_bad_scale(tiny_net, tmp_path):
    path = save_model(tiny_net, tmp_path / "m.h5")
    assert "input scale 255.0 is not in (0, 1]" in load_error(path, scale=255)


def test_missing_badnet_of_a_lab_says_where_it_goes(tmp_path):
    with pytest.raises(labkit.LabError, match=r"bd_net.h5: model file not found.*shared drive.*models/"):
        labkit.load_badnet(labkit.lab("lab", tmp_path))
