"""Hand-ins: the course's own eval.py, run with plain Keras and no labkit, grades what labkit saves
(B' and G.keras) with exactly labkit's numbers, and G's argmax is `goodnet.rule` image by image."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from labkit import cli
from labkit.data import Split
from labkit.goodnet import GoodNet, load_goodnet, rule
from labkit.metrics import evaluate, report_lines
from labkit.modelfile import load_model
from labkit.models import save_model
from labkit.prune import prune, repair
from labkit.sweep import sweep

# The course's lab3 eval.py as LAB.md describes it: h5py, transpose, no scaling, plain Keras.
EVAL_PY = """\
import sys
import h5py
import keras
import numpy as np

clean_data_filename = str(sys.argv[1])
poisoned_data_filename = str(sys.argv[2])
model_filename = str(sys.argv[3])


def data_loader(filepath):
    data = h5py.File(filepath, 'r')
    x_data = np.array(data['data'])
    y_data = np.array(data['label'])
    x_data = x_data.transpose((0, 2, 3, 1))
    return x_data, y_data


def main():
    cl_x_test, cl_y_test = data_loader(clean_data_filename)
    bd_x_test, bd_y_test = data_loader(poisoned_data_filename)
    bd_model = keras.models.load_model(model_filename)
    cl_label_p = np.argmax(bd_model.predict(cl_x_test), axis=1)
    clean_accuracy = np.mean(np.equal(cl_label_p, cl_y_test)) * 100
    print('Clean Classification accuracy:', clean_accuracy)
    bd_label_p = np.argmax(bd_model.predict(bd_x_test), axis=1)
    asr = np.mean(np.equal(bd_label_p, bd_y_test)) * 100
    print('Attack Success Rate:', asr)


if __name__ == '__main__':
    main()
"""

# Runs eval.py for each (clean, poisoned, model) and saves each model's argmax per image, in a
# Python where `import labkit` fails: the grader has Keras and h5py, never labkit.
GRADER = """\
import contextlib, io, json, runpy, sys
sys.modules["labkit"] = None
import h5py, keras, numpy as np
eval_py, jobs = sys.argv[1], json.loads(sys.argv[2])
for clean, poisoned, model, out in jobs:
    sys.argv = [eval_py, clean, poisoned, model]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        runpy.run_path(eval_py, run_name="__main__")
    g = keras.models.load_model(model)
    classes = {}
    for name, path in (("clean", clean), ("poisoned", poisoned)):
        with h5py.File(path, "r") as f:
            x = np.array(f["data"]).transpose((0, 2, 3, 1))
        classes[name] = np.argmax(g.predict(x, verbose=0), axis=1)
    np.savez(out, printed=printed.getvalue(), **classes)
"""


def grade(tmp_path, jobs, python=sys.executable):
    """Run the course's eval.py with `python` on each (clean, poisoned, model); return what it
    printed and each model's predicted classes."""
    (tmp_path / "eval.py").write_text(EVAL_PY)
    (tmp_path / "grader.py").write_text(GRADER)
    outs = [tmp_path / f"graded_{i}.npz" for i in range(len(jobs))]
    args = json.dumps([[str(c), str(p), str(m), str(o)] for (c, p, m), o in zip(jobs, outs)])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([str(python), str(tmp_path / "grader.py"), str(tmp_path / "eval.py"),
                           args], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = []
    for out in outs:
        with np.load(out) as z:
            printed = [line for line in str(z["printed"]).splitlines()  # not Keras's progress bars
                       if line.startswith(("Clean Classification accuracy:", "Attack Success Rate:"))]
            results.append((printed, z["clean"], z["poisoned"]))
    return results


def course_lines(capsys, args):
    """The two lines in the course's format that `labkit eval` prints."""
    assert cli.main([str(a) for a in args]) == 0
    out = capsys.readouterr().out.splitlines()
    return out[out.index("As the course's eval.py prints it:") + 1:]


@pytest.fixture(scope="module")
def demo_repaired(demo_lab):
    """B' of the demo BadNet, chosen the lab's way (validation accuracy drop of 4)."""
    badnet = load_model(demo_lab.badnet_path)
    return badnet, repair(sweep(badnet, demo_lab.valid), [4])[4].net


@pytest.mark.parametrize("keras_version", ["installed", "oldest"])
def test_courses_eval_grades_labkit_hand_ins_with_labkits_numbers(
        keras_version, request, demo_lab, demo_repaired, tiny_lab, tiny_net, tmp_path, capsys):
    """Written with the installed Keras, graded with it and with the oldest Keras labkit admits."""
    python = sys.executable if keras_version == "installed" else request.getfixturevalue("oldest_python")
    badnet, repaired = demo_repaired
    demo_rep = save_model(repaired, tmp_path / "demo_repaired.h5")
    demo_g = tmp_path / "G.keras"
    assert cli.main(["goodnet", str(demo_lab.badnet_path), str(demo_rep), "--save", str(demo_g)]) == 0
    # tiny_net takes pixels / 255: B' and G carry the scaling as a Rescaling layer
    tiny_rep = save_model(prune(tiny_net, np.arange(45)), tmp_path / "tiny_repaired.h5")
    tiny_g = tmp_path / "tiny_G.keras"
    assert cli.main(["goodnet", str(tiny_lab.badnet_path), str(tiny_rep), "--save", str(tiny_g)]) == 0
    capsys.readouterr()
    jobs = [(demo_lab.test.path, demo_lab.bd_test.path, demo_g),
            (tiny_lab.test.path, tiny_lab.bd_test.path, tiny_g),
            (tiny_lab.test.path, tiny_lab.bd_test.path, tiny_rep)]
    graded = grade(tmp_path, jobs, python)
    for (clean, poisoned, model), (printed, _, _) in zip(jobs, graded):
        assert printed == course_lines(capsys, ["eval", clean, poisoned, model]), model
        net = load_goodnet(model) if model.suffix == ".keras" else load_model(model)
        assert printed == report_lines(evaluate(net, Split(clean, kind="test"),
                                                Split(poisoned, kind="test", poisoned=True)))
    # G's argmax is the rule, image by image, on the demo test sets and the tiny ones
    for (b, r, lab), (_, clean_classes, poisoned_classes) in zip(
            [(badnet, repaired, demo_lab), (tiny_net, prune(tiny_net, np.arange(45)), tiny_lab)],
            graded):
        for split, classes in ((lab.test, clean_classes), (lab.bd_test, poisoned_classes)):
            x = split.load()[0]
            expected = rule(b.predict(x), r.predict(x), b.num_classes)
            np.testing.assert_array_equal(classes, expected)
    flagged = graded[0][1] == badnet.num_classes
    assert flagged.any() and (~flagged).any()  # both of G's cases occur in the demo


def test_saved_goodnet_loads_back_as_the_same_goodnet(tiny_net, tmp_path):
    from conftest import tiny_faces
    from labkit.goodnet import save_goodnet

    repaired = prune(tiny_net, np.arange(45))
    g = GoodNet(tiny_net, repaired, name="goodnet_4")
    back = load_goodnet(save_goodnet(g, tmp_path / "G.keras"))
    x = tiny_faces(200, seed=5)[0]
    np.testing.assert_array_equal(back.predict(x), g.predict(x))
    assert back.name == "goodnet_4" and back.badnet.scale == pytest.approx(1 / 255)
    kernel = back.repaired.model.get_layer("conv_3").get_weights()[0]
    assert (kernel[..., :45] == 0).all() and (kernel[..., 45:] != 0).any()
    assert [p.name for p in tmp_path.iterdir()] == ["G.keras"]


def test_goodnet_file_with_code_is_refused(tiny_net, tmp_path):
    import keras

    import labkit
    from labkit.goodnet import keras_goodnet

    model = keras_goodnet(GoodNet(tiny_net, tiny_net))
    extra = keras.Model(model.input, keras.layers.Lambda(lambda t: t * 2)(model.output))
    extra.save(tmp_path / "evil.keras")
    with pytest.raises(labkit.LabError, match=r"refused: .*Lambda"):
        load_goodnet(tmp_path / "evil.keras")


# The course's architecture.py (Keras 2), which Keras 2 graders fill with load_weights.
ARCHITECTURE_PY = """\
import sys
sys.modules["labkit"] = None
import numpy as np
import tf_keras as keras
from tf_keras.layers import Activation, Add, Conv2D, Dense, Flatten, Input, MaxPooling2D

x = Input(shape=(55, 47, 3), name="input")
pool_1 = MaxPooling2D((2, 2), name="pool_1")(Conv2D(20, (4, 4), activation="relu", name="conv_1")(x))
pool_2 = MaxPooling2D((2, 2), name="pool_2")(Conv2D(40, (3, 3), activation="relu", name="conv_2")(pool_1))
pool_3 = MaxPooling2D((2, 2), name="pool_3")(Conv2D(60, (3, 3), activation="relu", name="conv_3")(pool_2))
fc_1 = Dense(160, name="fc_1")(Flatten()(pool_3))
fc_2 = Dense(160, name="fc_2")(Flatten()(Conv2D(80, (2, 2), activation="relu", name="conv_4")(pool_3)))
out = Dense(int(sys.argv[3]), activation="softmax", name="output")(Activation("relu")(Add()([fc_1, fc_2])))
model = keras.Model(x, out)
model.load_weights(sys.argv[1])
images = np.load(sys.argv[2])
np.save(sys.argv[2], np.argmax(model.predict(images / 255, verbose=0), axis=1))
"""


def test_keras2_grader_fills_the_courses_architecture_from_labkits_h5(tiny_net, tmp_path):
    import importlib.util

    from conftest import tiny_faces

    if importlib.util.find_spec("tf_keras") is None:
        pytest.skip("tf_keras (Keras 2) is not installed")
    repaired = prune(tiny_net, np.arange(45))  # takes pixels / 255, saved as a Rescaling layer
    path = save_model(repaired, tmp_path / "repaired.h5")
    x = tiny_faces(200, seed=5)[0]
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "architecture.py").write_text(ARCHITECTURE_PY)
    proc = subprocess.run([sys.executable, str(tmp_path / "architecture.py"), str(path),
                           str(tmp_path / "x.npy"), "10"], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # a Keras 2 grader scales the pixels itself (the CSAW-2020 eval.py divides by 255)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), repaired.predict(x))


def test_goodnet_file_with_another_rule_is_refused(tiny_net, tmp_path):
    import keras
    from keras import ops

    import labkit
    from labkit.models import lab_model

    x = keras.Input((55, 47, 3))
    b, r = (lab_model(net.model, net.scale, part)(x)
            for net, part in ((tiny_net, "badnet"), (prune(tiny_net, np.arange(45)), "repaired")))
    agree = ops.expand_dims(ops.cast(ops.equal(ops.argmax(b, -1), ops.argmax(r, -1)), "float32"), -1)
    flip = keras.layers.Concatenate()([r * agree, 1 - agree])  # B''s class instead of B's
    keras.Model(x, flip).save(tmp_path / "other.keras")
    with pytest.raises(labkit.LabError, match="not GoodNet's rule"):
        load_goodnet(tmp_path / "other.keras")
