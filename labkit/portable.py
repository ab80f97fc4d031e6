"""Model files every Keras labkit admits opens: configs written in the oldest one's words.

Each Keras release may add arguments to a layer's saved config (Keras 3.15 added `input_axes`
and `output_axes` to GlorotUniform), and an older Keras refuses a config naming an argument it
does not know. So labkit lets Keras save, then rewrites the saved config keeping, for each
Keras object, only the arguments the oldest admitted Keras (`OLDEST_KERAS`, Colab's) knows.
The arguments left out are ones labkit never sets (initializers, a newer option at its
default), so the model computes the same; `tests/test_portable.py` opens what labkit writes in
that Keras and compares predictions.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import h5py

from .errors import LabError

OLDEST_KERAS = "3.13.2"  # pyproject.toml's lower bound: Colab's Keras
# The config arguments Keras 3.13.2 writes for each class labkit saves (printed there by
# `python tests/keras_keys.py`; tests/test_portable.py checks this table against it).
KEYS = {
    "Activation": ["activation", "dtype", "name", "trainable"],
    "Add": ["dtype", "name", "trainable"],
    "Argmax": ["axis", "keepdims", "name"],
    "Cast": ["dtype", "name"],
    "Concatenate": ["axis", "dtype", "name", "trainable"],
    "Conv2D": ["activation", "activity_regularizer", "bias_constraint", "bias_initializer",
               "bias_regularizer", "data_format", "dilation_rate", "dtype", "filters", "groups",
               "kernel_constraint", "kernel_initializer", "kernel_regularizer", "kernel_size",
               "name", "padding", "strides", "trainable", "use_bias"],
    "DTypePolicy": ["name"],
    "Dense": ["activation", "bias_constraint", "bias_initializer", "bias_regularizer", "dtype",
              "kernel_constraint", "kernel_initializer", "kernel_regularizer", "name",
              "quantization_config", "trainable", "units", "use_bias"],
    "Equal": ["name"],
    "ExpandDims": ["axis", "name"],
    "Flatten": ["data_format", "dtype", "name", "trainable"],
    "Functional": ["input_layers", "layers", "name", "output_layers", "trainable"],
    "GlorotUniform": ["seed"],
    "InputLayer": ["batch_shape", "dtype", "name", "optional", "ragged", "sparse"],
    "MaxPooling2D": ["data_format", "dtype", "name", "padding", "pool_size", "strides",
                     "trainable"],
    "Multiply": ["name"],
    "Rescaling": ["dtype", "name", "offset", "scale", "trainable"],
    "Subtract": ["name"],
    "Zeros": [],
    "__keras_tensor__": ["dtype", "keras_history", "shape"],
}


def portable(config):
    """`config` (a saved model's JSON) with each Keras object's arguments cut to `KEYS`.

    A class labkit does not write is refused: its arguments in the oldest Keras are unknown.
    """
    if isinstance(config, list):
        return [portable(v) for v in config]
    if not isinstance(config, dict):
        return config
    out = {k: portable(v) for k, v in config.items()}
    if isinstance(out.get("class_name"), str) and isinstance(out.get("config"), dict):
        keys = KEYS.get(out["class_name"])
        if keys is None:
            raise LabError(f"labkit cannot save a model holding {out['class_name']}: it writes "
                           "only the lab's layers (see labkit.portable.KEYS)")
        out["config"] = {k: v for k, v in out["config"].items() if k in keys}
    return out


def save_portable(model, tmp: Path) -> None:
    """Save a Keras model to `tmp` (.h5 or .keras), its config in the oldest admitted Keras' words."""
    model.save(tmp)
    if tmp.suffix == ".h5":
        with h5py.File(tmp, "r+") as f:
            f.attrs["model_config"] = json.dumps(portable(json.loads(f.attrs["model_config"])))
        return
    with zipfile.ZipFile(tmp) as src:  # a .keras archive: a few MB, rewritten in memory
        members = [(info, src.read(info.filename)) for info in src.infolist()]
    with zipfile.ZipFile(tmp, "w") as dst:
        for info, data in members:
            if info.filename == "config.json":
                data = json.dumps(portable(json.loads(data))).encode()
            dst.writestr(info, data)
