"""Model files every admitted Keras opens: labkit writes configs in the oldest Keras' words.

The files are saved here with the installed Keras and opened with plain `keras.models.load_model`
in OLDEST_PYTHON (Colab's runtime, the oldest Keras labkit admits); test_handin.py runs the
course's eval.py there too.
"""
import json
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

import labkit
from labkit.demo import SHIPPED
from labkit.portable import KEYS, OLDEST_KERAS, portable

HERE = Path(__file__).parent
PREDICT = """\
import sys
sys.modules["labkit"] = None
import h5py, keras, numpy as np
x = np.array(h5py.File(sys.argv[1], "r")["data"]).transpose((0, 2, 3, 1))
print(keras.__version__)
for path in sys.argv[2:]:
    print(" ".join(map(str, np.argmax(keras.models.load_model(path).predict(x, verbose=0), 1))))
"""


def run(python, *args) -> list[str]:
    proc = subprocess.run([str(python), *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


def test_portable_keeps_only_what_the_oldest_keras_knows(tiny_net, tmp_path):
    saved = labkit.save_model(tiny_net, tmp_path / "b.h5")
    with h5py.File(saved) as f:
        config = json.loads(f.attrs["model_config"])
    newer = json.loads(json.dumps(config).replace('"seed": null', '"seed": null, "input_axes": [0]'))
    assert "input_axes" in json.dumps(newer)
    assert portable(newer) == config  # what labkit wrote is already in the oldest Keras' words
    layer = {"class_name": "Lambda", "config": {"function": "evil"}}
    with pytest.raises(labkit.LabError, match="Lambda"):
        portable({"class_name": "Functional", "config": {"layers": [layer]}})


def test_keys_are_what_the_oldest_keras_writes(oldest_python):
    version, = run(oldest_python, "-c", "import keras; print(keras.__version__)")
    assert version == OLDEST_KERAS
    out = run(oldest_python, HERE / "keras_keys.py")[-1]
    assert json.loads(out) == KEYS


def test_shipped_and_written_models_open_in_the_oldest_keras(oldest_python, demo_lab, tmp_path):
    from labkit.goodnet import GoodNet, save_goodnet
    from labkit.prune import prune

    badnet = labkit.load_model(demo_lab.badnet_path)
    repaired = prune(badnet, np.arange(40))
    files = sorted(SHIPPED.glob("*.h5")) + [
        labkit.save_model(repaired, tmp_path / "repaired.h5"),
        save_goodnet(GoodNet(badnet, repaired), tmp_path / "G.keras")]
    (tmp_path / "predict.py").write_text(PREDICT)
    version, *classes = run(oldest_python, tmp_path / "predict.py", demo_lab.test.path, *files)
    assert version == OLDEST_KERAS
    x = demo_lab.test.load()[0]
    nets = [labkit.load_model(f) for f in files[:-1]]
    expected = [net.predict(x) for net in nets] + [GoodNet(badnet, repaired).predict(x)]
    for path, got, want in zip(files, classes, expected):
        np.testing.assert_array_equal(np.array(got.split(), int), want, err_msg=str(path))
