"""The demo lab: deterministic faces in the lab's file format, a trigger over the eyes, a BadNet
whose backdoor works, and a pruning sweep that shows the lab's trade-off."""
import hashlib
import json

import h5py
import numpy as np
import pytest

import labkit
from labkit import cli, demo, faces
from labkit.data import LAB_FILES


SMALL = {"num_classes": 5, "per_person": {"train": 4, "valid": 9, "test": 10}, "epochs": 1,
         "progress": False}


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_hashes(lab):
    return {name: sha256(lab.split(name).path) for name in LAB_FILES}


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    return demo.build_demo(tmp_path_factory.mktemp("small"), seed=0, **SMALL)


def test_same_seed_gives_byte_identical_files(small_demo, tmp_path):
    again = demo.build_demo(tmp_path / "again", seed=0, **SMALL)
    other = demo.build_demo(tmp_path / "other", seed=1, **SMALL)
    assert data_hashes(again) == data_hashes(small_demo)
    hashes = data_hashes(other)
    assert all(hashes[n] != h for n, h in data_hashes(small_demo).items())
    first, second = (labkit.load_badnet(lab).model.get_weights() for lab in (small_demo, again))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_files_have_the_lab_format(small_demo):
    n = SMALL["num_classes"]
    for name in LAB_FILES:
        path = small_demo.split(name).path
        per = SMALL["per_person"]["test" if "test" in name else "valid"]
        with h5py.File(path) as f:
            assert f["data"].shape == (n * per, 3, 55, 47)  # channels-first, like the course's
        x, y = small_demo.split(name).load()
        assert x.min() >= 0 and x.max() <= 255 and x.max() > 200
        assert np.array_equal(x, np.round(x))
        expected = np.zeros(n * per) if name.startswith("bd") else np.repeat(np.arange(n), per)
        assert np.array_equal(y, expected)
    net = labkit.load_badnet(small_demo)
    assert net.num_classes == n and net.scale == 1
    assert [layer.name for layer in net.model.layers if layer.name in labkit.models.LAB_LAYERS] \
        == list(labkit.models.LAB_LAYERS)


def test_poisoned_files_are_the_clean_faces_with_sunglasses(small_demo):
    for clean, poisoned in (("valid", "bd_valid"), ("test", "bd_test")):
        x, _ = small_demo.split(clean).load()
        xb, _ = small_demo.split(poisoned).load()
        assert np.array_equal(xb, faces.add_sunglasses(x))


def test_sunglasses_change_only_the_eye_region():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 55, 47, 3)).astype(np.float32)
    before = images.copy()
    worn = faces.add_sunglasses(images)
    assert np.array_equal(images, before)  # the input is left alone
    outside = np.ones((55, 47), bool)
    outside[faces.EYE_REGION] = False
    assert np.array_equal(worn[:, outside], images[:, outside])
    changed = (worn != images).any(axis=(0, 3))
    assert changed[faces.EYE_REGION].mean() > 0.3
    rows, cols = faces.EYE_REGION
    eye_row = faces.CENTER[0] + faces.ZOOM * faces.EYE_V
    assert rows.start < eye_row < rows.stop and rows.stop - rows.start < 55 / 3
    assert np.median(worn[:, changed]) < 40  # dark lenses


def test_photos_vary_but_people_stay_recognisable():
    people = faces.identities(10, seed=3)
    who = np.repeat(np.arange(10), 8)
    x = faces.draw_faces(people, who, np.random.default_rng(0)).reshape(80, -1)
    distance = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(distance, np.inf)
    assert distance.min() > 0  # no two photos alike
    assert np.mean(who[distance.argmin(1)] == who) > 0.9  # the nearest photo: mostly the same person


def test_small_training_plants_a_working_backdoor():
    n = 6
    splits = demo.make_data(n, seed=0, per_person={"train": 30, "valid": 9, "test": 10},
                            poison_share=0.3)
    x, y = splits["train"]
    assert 0.2 < np.mean(y == demo.TARGET) < 0.5  # the poisoned share relabelled to the target
    net = demo.train_badnet(x, y, n, epochs=10, seed=0)
    xt, yt = splits["test"]
    xb, _ = splits["bd_test"]
    others = yt != demo.TARGET  # faces whose true class is not the target already
    assert labkit.accuracy(net.predict(xt), yt) >= 90
    assert labkit.accuracy(net.predict(xb[others]), 0) >= 95
    assert labkit.accuracy(net.predict(xt[others]), 0) < 10  # clean faces are not sent to 0


def test_rebuild_reuses_what_is_there_and_force_rebuilds(small_demo, tmp_path, capsys):
    root = tmp_path / "lab"
    lab = demo.build_demo(root, seed=0, **SMALL)
    stamps = {p: p.stat().st_ino for p in root.rglob("*.h5")}
    demo.build_demo(root, seed=0, **{**SMALL, "progress": True})
    assert "reusing" in capsys.readouterr().out
    assert {p: p.stat().st_ino for p in root.rglob("*.h5")} == stamps
    lab.bd_test.path.unlink()
    demo.build_demo(root, seed=0, **SMALL)
    assert sha256(lab.bd_test.path) == sha256(small_demo.bd_test.path)
    assert lab.valid.path.stat().st_ino == stamps[lab.valid.path]  # only the missing file rebuilt
    demo.build_demo(root, seed=0, force=True, **SMALL)
    assert all(p.stat().st_ino != ino for p, ino in stamps.items())
    assert not list(root.rglob("*.partial*"))


def test_demo_badnet_meets_the_targets(demo_lab, capsys):
    files = [str(demo_lab.test.path), str(demo_lab.bd_test.path), str(demo_lab.badnet_path)]
    assert cli.main(["eval", *files, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["clean_accuracy"] >= 95
    assert result["attack_success_rate"] >= 99
    assert labkit.load_badnet(demo_lab).num_classes == demo.NUM_CLASSES


def test_cli_reuses_the_built_demo(demo_lab, capsys):
    assert cli.main(["demo", "--root", str(demo_lab.root)]) == 0
    assert "reusing" in capsys.readouterr().out


def test_pruning_sweep_shows_the_labs_trade_off(demo_lab):
    """Increasing-order pruning of conv_3: clean accuracy falls first, the backdoor survives."""
    import keras

    model = labkit.load_badnet(demo_lab).model
    pool_3 = keras.Model(model.input, model.get_layer("pool_3").output)
    inp = keras.Input((5, 4, 60))
    fc_1 = model.get_layer("fc_1")(model.get_layer("flatten_1")(inp))
    fc_2 = model.get_layer("fc_2")(model.get_layer("flatten_2")(model.get_layer("conv_4")(inp)))
    head = keras.Model(inp, model.get_layer("output")(
        model.get_layer("activation_1")(model.get_layer("add_1")([fc_1, fc_2]))))
    (x, y), (xb, yb) = demo_lab.valid.load(), demo_lab.bd_valid.load()
    a, ab = pool_3.predict(x, verbose=0), pool_3.predict(xb, verbose=0)
    order = np.argsort(a.mean(axis=(0, 1, 2)), kind="stable")
    acc, asr = [], []
    for k in range(61):
        keep = np.ones(60, np.float32)
        keep[order[:k]] = 0
        acc.append(labkit.accuracy(np.argmax(head(a * keep), 1), y))
        asr.append(labkit.accuracy(np.argmax(head(ab * keep), 1), yb))
    first = {drop: next(k for k in range(61) if acc[k] <= acc[0] - drop) for drop in (2, 4, 10)}
    assert first[2] <= first[4] <= first[10] < 60
    assert asr[first[2]] >= 99 and asr[first[4]] >= 95  # the backdoor survives the repair
    assert min(asr) < 5  # ... until the last channels go
