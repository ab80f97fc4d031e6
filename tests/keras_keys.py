"""Print, as JSON, the config arguments this Keras writes for each class labkit saves.

    python tests/keras_keys.py     # in the oldest Keras labkit admits: labkit.portable.KEYS

Plain Keras, no labkit: the model below holds every kind of layer and op that labkit's B' and
G.keras hold (the lab's network, a Rescaling layer, GoodNet's rule).
"""
import json

import keras
from keras import layers, ops


def model():
    x = keras.Input((55, 47, 3), name="input")
    y = layers.MaxPooling2D(2)(layers.Conv2D(20, 4, activation="relu")(layers.Rescaling(1 / 255)(x)))
    a, b = layers.Dense(5)(layers.Flatten()(y)), layers.Dense(5)(layers.Flatten()(y))
    z = layers.Activation("relu")(layers.Add()([a, b]))
    agree = ops.expand_dims(ops.cast(ops.equal(ops.argmax(z, -1), ops.argmax(a, -1)), z.dtype), -1)
    return keras.Model(x, layers.Concatenate()([z * agree, 1 - agree]))


def keys(config, found=None) -> dict:
    """{class name: sorted config arguments} of every Keras object in a saved config."""
    found = {} if found is None else found
    if isinstance(config, dict):
        if isinstance(config.get("class_name"), str) and isinstance(config.get("config"), dict):
            found.setdefault(config["class_name"], set()).update(config["config"])
        for value in config.values():
            keys(value, found)
    elif isinstance(config, list):
        for value in config:
            keys(value, found)
    return found


if __name__ == "__main__":
    print(json.dumps({k: sorted(v) for k, v in sorted(keys(json.loads(model().to_json())).items())}))
