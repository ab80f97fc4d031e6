"""The pruning defense: masked sweep == zeroed-weights networks, order, stopping rule, files, CLI."""
import json

import numpy as np
import pandas as pd
import pytest

import labkit
from labkit import cache, cli
from labkit.data import LAB_FILES, Split, write_split
from labkit.metrics import clean_accuracy, predict
from labkit.files import file_sha256
from labkit.modelfile import load_model
from labkit.models import save_model
from labkit.prune import (Repaired, check_drop, mean_activations, prune, pruning_order, repair,
                          stop_step)
from labkit.repaired import load_repaired, save_repaired
from labkit.head import Head, masking_problem
from labkit.sweep import Sweep, sweep

from conftest import tiny_faces, write_tiny_lab

CHECK_STEPS = (0, 5, 30, 45, 55, 60)


def lab_sweep(lab, net, **kw):
    return sweep(net, lab.valid, lab.bd_valid, lab.test, lab.bd_test, **kw)


def assert_masked_equals_zeroed(s: Sweep, net, steps=CHECK_STEPS):
    """B_k's predictions from the sweep equal those of the network with k channels zeroed."""
    changed = 0
    for k in steps:
        pruned = prune(net, s.order[:k])
        for name, split in s.splits.items():
            expected, _ = predict(pruned, split)
            np.testing.assert_array_equal(s.predictions(name, k), expected, f"{name}, k={k}")
            changed += int((expected != s.predictions(name, 0)).sum())
    assert changed > 0  # pruning changed predictions, so the comparison had something to catch


@pytest.fixture(scope="module")
def tiny_lab200(tmp_path_factory, tiny_net):
    return write_tiny_lab(tmp_path_factory.mktemp("lab200"), tiny_net, n=200)


@pytest.fixture(scope="module")
def tiny_sweep(tiny_lab200, tiny_net):
    return lab_sweep(tiny_lab200, tiny_net)


def random_lab(root, net, n=150):
    """The lab's four files of random images, labels among the net's classes."""
    rng = np.random.default_rng(0)
    lab = labkit.lab("lab", root)
    for name in LAB_FILES:
        x = rng.integers(0, 256, (n, 55, 47, 3)).astype(np.float32)
        write_split(lab.split(name).path, x, rng.integers(0, net.num_classes, n))
    return lab


def test_masked_sweep_equals_zeroed_networks_tiny(tiny_sweep, tiny_net):
    assert tiny_sweep.exact_masking
    assert_masked_equals_zeroed(tiny_sweep, tiny_net)


def test_masked_sweep_equals_zeroed_networks_lab3(real, tmp_path):
    net = load_model(real / "lab3_bd_weights.h5")
    s = lab_sweep(random_lab(tmp_path, net), net)
    assert s.exact_masking and s.steps == 60
    assert_masked_equals_zeroed(s, net, steps=(0, 45, 50, 54, 57, 60))


def test_masking_applies_to_the_courses_full_model(real):
    net = load_model(real / "legacy_keras24_full_model.h5")  # Keras 2.4 file, 52 channels pruned
    assert masking_problem(net) is None


def test_masked_sweep_equals_zeroed_networks_demo(demo_lab, tmp_path):
    demo = demo_lab
    net = labkit.load_badnet(demo)
    sub = labkit.lab("lab", tmp_path)  # 300 images of each demo file keep the test fast
    for name in LAB_FILES:
        x, y = demo.split(name).images(np.arange(300))
        write_split(sub.split(name).path, x, y)
    assert_masked_equals_zeroed(lab_sweep(sub, net), net)


def test_prune_zeroes_channels_and_leaves_the_input_alone(tiny_net):
    before = [w.copy() for w in tiny_net.model.get_weights()]
    pruned = prune(tiny_net, [3, 17, 59])
    after = tiny_net.model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    kernel, bias = pruned.model.get_layer("conv_3").get_weights()
    k0, b0 = tiny_net.model.get_layer("conv_3").get_weights()
    zeroed = np.flatnonzero((kernel == 0).all(axis=(0, 1, 2)) & (bias == 0))
    assert zeroed.tolist() == [3, 17, 59]
    keep = np.setdiff1d(np.arange(60), zeroed)
    assert np.array_equal(kernel[..., keep], k0[..., keep]) and np.array_equal(bias[keep], b0[keep])
    assert pruned.scale == tiny_net.scale and pruned.model is not tiny_net.model
    with pytest.raises(labkit.LabError, match="0..59"):
        prune(tiny_net, [60])


def test_sweep_leaves_the_badnet_alone(tiny_lab, tiny_net):
    before = [w.copy() for w in tiny_net.model.get_weights()]
    lab_sweep(tiny_lab, tiny_net)
    assert all(np.array_equal(a, b) for a, b in zip(before, tiny_net.model.get_weights()))


def test_pruning_orders():
    means = np.array([0.5, 0.0, 2.0, 0.0, 1.0])
    assert pruning_order(means).tolist() == [1, 3, 0, 4, 2]
    assert pruning_order(means, "decreasing").tolist() == [2, 4, 0, 1, 3]
    shuffled = pruning_order(means, "random", seed=1)
    assert sorted(shuffled) == [0, 1, 2, 3, 4]
    assert shuffled.tolist() == pruning_order(means, "random", seed=1).tolist()
    others = [pruning_order(means, "random", seed=s).tolist() for s in range(2, 6)]
    assert any(o != shuffled.tolist() for o in others)
    with pytest.raises(labkit.LabError, match="increasing"):
        pruning_order(means, "largest")


def test_sweep_order_follows_mean_activations_on_valid(tiny_sweep, tiny_net, tiny_lab200):
    means = mean_activations(tiny_net, tiny_lab200.valid)
    np.testing.assert_array_equal(tiny_sweep.mean_activations, means)
    assert np.all(np.diff(means[tiny_sweep.order]) >= 0)
    decreasing = lab_sweep(tiny_lab200, tiny_net, order="decreasing")
    assert np.all(np.diff(means[decreasing.order]) <= 0)


def test_mean_activations_use_the_input_scale(tiny_net, tiny_lab):
    import keras

    sub = keras.Model(tiny_net.model.input, tiny_net.model.get_layer("pool_3").output)
    x, _ = tiny_lab.valid.load()
    expected = np.asarray(sub(x * tiny_net.scale)).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(mean_activations(tiny_net, tiny_lab.valid, batch_size=16), expected,
                               rtol=1e-5)
    raw = labkit.Net(tiny_net.model, scale=1.0)
    assert not np.allclose(mean_activations(raw, tiny_lab.valid), expected, rtol=1e-3)


def test_sweep_table_columns_match_independent_metrics(tiny_sweep, tiny_net, tiny_lab200):
    t = tiny_sweep.table
    assert list(t.columns) == ["pruned", "fraction_pruned", "channel", "mean_activation",
                               "valid_accuracy", "valid_attack_success_rate", "test_accuracy",
                               "test_attack_success_rate", "goodnet_accuracy",
                               "goodnet_attack_success_rate", "goodnet_flagged_clean",
                               "goodnet_flagged_poisoned"]
    assert t.pruned.tolist() == list(range(61)) and t.fraction_pruned.iloc[-1] == 1
    assert t.channel.iloc[0] == -1 and t.channel.iloc[1:].tolist() == tiny_sweep.order.tolist()
    from labkit.goodnet import GoodNet

    for k in (0, 30, 55):
        bk = prune(tiny_net, tiny_sweep.order[:k])
        row = t.iloc[k]
        assert row.valid_accuracy == pytest.approx(clean_accuracy(bk, tiny_lab200.valid))
        asr = clean_accuracy(bk, tiny_lab200.bd_test)
        assert row.test_attack_success_rate == pytest.approx(asr)
        g = GoodNet(tiny_net, bk)
        gp, gy = predict(g, tiny_lab200.test)
        assert row.goodnet_accuracy == pytest.approx(100 * np.mean(gp == gy))
        assert row.goodnet_flagged_clean == pytest.approx(100 * np.mean(gp == 10))
        gp, gy = predict(g, tiny_lab200.bd_test)
        assert row.goodnet_attack_success_rate == pytest.approx(100 * np.mean(gp == gy))
        assert row.goodnet_flagged_poisoned == pytest.approx(100 * np.mean(gp == 10))
    assert t.goodnet_flagged_clean.iloc[0] == 0 and t.goodnet_flagged_clean.iloc[-1] > 0


def test_sweep_without_test_files_has_validation_columns_only(tiny_lab, tiny_net):
    s = sweep(tiny_net, tiny_lab.valid)
    assert list(s.table.columns) == ["pruned", "fraction_pruned", "channel", "mean_activation",
                                     "valid_accuracy"]
    with pytest.raises(labkit.LabError, match="valid"):
        s.predictions("test", 3)
    with pytest.raises(labkit.LabError, match="0..60"):
        s.predictions("valid", 61)


def test_sweep_keeps_validation_and_test_apart(tiny_lab, tiny_net):
    with pytest.raises(labkit.LabError, match="validation data only"):
        sweep(tiny_net, tiny_lab.test)
    with pytest.raises(labkit.LabError, match="test data only"):
        sweep(tiny_net, tiny_lab.valid, test=tiny_lab.bd_valid)


def test_sweep_refuses_labels_outside_the_models_classes(tiny_net, tmp_path):
    x, _ = tiny_faces(20)
    path = write_split(tmp_path / "valid.h5", x, np.arange(20) * 60)  # labels up to 1140
    with pytest.raises(labkit.LabError, match="outside the model's 10 classes"):
        sweep(tiny_net, Split(path))


def test_to_csv_round_trip(tiny_sweep, tmp_path):
    path = tiny_sweep.to_csv(tmp_path / "out" / "sweep.csv")
    back = pd.read_csv(path)
    percent = [c for c in tiny_sweep.table if "accuracy" in c or "rate" in c or "flagged" in c]
    assert percent and all(f"{c}_pct" in back for c in percent)  # the unit is in the name
    for c in percent:  # whole hundredths of a point, within rounding of the table's values
        assert np.allclose(back[f"{c}_pct"], tiny_sweep.table[c], atol=0.005)
        assert np.allclose(back[f"{c}_pct"] * 100, np.round(back[f"{c}_pct"] * 100))
    assert back.fraction_pruned.astype(str).str.len().max() <= 6  # no 0.30000000000000004
    assert [p.name for p in path.parent.iterdir()] == ["sweep.csv"]


def fake_sweep(net, correct_counts, n=100):
    """A sweep whose validation accuracy at step k is correct_counts[k] of n (percent)."""
    steps = len(correct_counts) - 1
    preds = np.ones((steps + 1, n), np.int32)
    for k, c in enumerate(correct_counts):
        preds[k, :c] = 0
    return Sweep(np.arange(steps), np.zeros(steps), net, {}, {"valid": preds},
                 {"valid": np.zeros(n, np.int64)})


def test_repair_takes_the_first_step_at_least_x_below(tiny_net):
    s = fake_sweep(tiny_net, [100, 99, 98, 96, 97, 90, 50])
    r = repair(s, (1, 2, 2.5, 4, 10, 50))
    assert {x: r[x].step for x in r} == {1: 1, 2: 2, 2.5: 3, 4: 3, 10: 5, 50: 6}
    assert r[4].valid_accuracy_badnet == 100 and r[4].valid_accuracy == 96
    assert r[4].pruned.tolist() == [0, 1, 2]
    kernel = r[4].net.model.get_layer("conv_3").get_weights()[0]
    assert np.flatnonzero((kernel == 0).all(axis=(0, 1, 2))).tolist() == [0, 1, 2]
    with pytest.raises(labkit.LabError, match="never falls 51 points"):
        repair(s, (51,))


@pytest.mark.parametrize("drop", [-1, 0, 100.5, "abc", float("nan"), True])
def test_repair_refuses_drops_outside_0_100(tiny_sweep, drop):
    with pytest.raises(labkit.LabError, match="above 0 and at most 100"):
        repair(tiny_sweep, (2, drop))


def test_stop_step_is_the_first_step_at_least_x_below():
    acc = [90.0, 90.0, 89.0, 88.0, 86.0, 87.9, 80.0]
    assert [stop_step(acc, x) for x in (1, 2, 3, 4, 10, 11)] == [2, 3, 4, 4, 6, None]
    assert stop_step([100 * 450 / 900, 100 * 432 / 900], 2) == 1  # 2.0000000000000018 or 1.99...: 2
    assert check_drop("4") == 4.0 and check_drop(2.5) == 2.5


def test_repaired_networks_are_the_sweeps_steps(tiny_sweep, tiny_lab200):
    for x, r in repair(tiny_sweep, (2, 4, 10)).items():
        assert isinstance(r, Repaired) and r.drop == x
        assert r.valid_accuracy_badnet - r.valid_accuracy >= x
        before = tiny_sweep.table.valid_accuracy.iloc[:r.step]
        assert (r.valid_accuracy_badnet - before < x).all()
        expected, _ = predict(r.net, tiny_lab200.valid)
        np.testing.assert_array_equal(tiny_sweep.predictions("valid", r.step), expected)


def test_save_repaired_writes_model_and_json(tiny_sweep, tiny_lab200, tmp_path):
    source = tiny_lab200.badnet_path
    written = save_repaired(repair(tiny_sweep, (2.5, 10)), tmp_path / "rep", source=source)
    assert sorted(p.name for p in written) == ["repaired_10.h5", "repaired_10.json",
                                                "repaired_2.5.h5", "repaired_2.5.json"]
    info = json.loads((tmp_path / "rep" / "repaired_2.5.json").read_text())
    r = repair(tiny_sweep, (2.5,))[2.5]
    assert info["pruned_channels"] == r.pruned.tolist() and info["step"] == r.step
    assert info["drop"] == 2.5 and info["valid_accuracy"] == pytest.approx(r.valid_accuracy)
    assert info["valid_accuracy_badnet"] == pytest.approx(r.valid_accuracy_badnet)
    assert info["source_sha256"] == file_sha256(source)
    assert info["input_scale"] == pytest.approx(1 / 255)
    assert "first step" in info["rule"]
    loaded = load_model(tmp_path / "rep" / "repaired_2.5.h5")
    assert loaded.scale == pytest.approx(1 / 255)
    x, _ = tiny_lab200.valid.load()
    np.testing.assert_array_equal(loaded.predict(x), r.net.predict(x))
    assert not any(p.name.startswith(".") for p in (tmp_path / "rep").iterdir())
    assert list(load_repaired(tmp_path / "rep")) == [2.5, 10.0]
    assert list(load_repaired(tmp_path / "rep", drops=[10])) == [10.0]  # only this run's X
    with pytest.raises(labkit.LabError, match="repaired_4.json: not found"):
        load_repaired(tmp_path / "rep", drops=[4])


def test_save_repaired_never_overwrites_the_source(tiny_sweep, tiny_net, tmp_path):
    source = save_model(tiny_net, tmp_path / "repaired_2.h5")
    digest = file_sha256(source)
    with pytest.raises(labkit.LabError, match="refusing to overwrite"):
        save_repaired(repair(tiny_sweep, (2,)), tmp_path, source=source)
    assert file_sha256(source) == digest


def test_fallback_without_relu_runs_each_pruned_network(tiny_net, tiny_lab):
    import keras

    config = tiny_net.model.get_config()
    for layer in config["layers"]:
        if layer["name"] == "conv_3":
            layer["config"]["activation"] = "sigmoid"  # a zeroed channel gives 0.5, not 0
    model = keras.Model.from_config(config)
    model.set_weights(tiny_net.model.get_weights())
    net = labkit.Net(model, scale=tiny_net.scale)
    assert "not a ReLU" in masking_problem(net)
    with pytest.warns(UserWarning, match="not a ReLU"):
        s = sweep(net, tiny_lab.valid, test=tiny_lab.test)
    assert not s.exact_masking
    assert_masked_equals_zeroed(s, net, steps=(0, 30, 60))
    # masking would have been wrong here
    acts = np.concatenate([np.asarray(keras.Model(model.input, model.get_layer("pool_3").output)(
        x * net.scale)) for x, _ in tiny_lab.valid.batches()])
    masked = Head(net).sweep(acts, s.order)[0]
    assert (masked[60] != s.predictions("valid", 60)).any()


def test_head_updated_channel_by_channel_equals_recomputing_it(tiny_net, tiny_lab):
    s = sweep(tiny_net, tiny_lab.valid, test=tiny_lab.test)
    acts = np.concatenate([cache.features(tiny_net, split, None).pool_3 for split in s.splits.values()])
    head = Head(tiny_net)
    swept, work = head.sweep(acts, s.order)  # fc_1 and conv_4 updated per pruned channel
    for k in (1, 7, 30, 59, 60):
        np.testing.assert_array_equal(swept[k], head.predict(acts, s.order[:k]), f"k={k}")
    assert (swept[60] != swept[0]).any()
    # every image once, then each image again at each step whose channel is non-zero in it
    assert work == len(acts) + int((acts != 0).any(axis=(1, 2))[:, s.order].sum())


def test_another_head_after_pool_3_runs_each_pruned_network(tiny_net, tiny_lab):
    import keras

    config = tiny_net.model.get_config()
    for layer in config["layers"]:
        if layer["name"] == "fc_1":
            layer["config"]["activation"] = "relu"  # fc_1 no longer linear in pool_3
    model = keras.Model.from_config(config)
    model.set_weights(tiny_net.model.get_weights())
    net = labkit.Net(model, scale=tiny_net.scale)
    assert "layers after pool_3 are not the lab's (fc_1)" in masking_problem(net)
    with pytest.warns(UserWarning, match="not the lab's"):
        s = sweep(net, tiny_lab.valid)
    assert not s.exact_masking
    assert_masked_equals_zeroed(s, net, steps=(0, 30, 60))


def run_cli(args, capsys):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_prune_writes_repaired_models_and_table(tiny_lab200, capsys):
    lab = tiny_lab200
    code, out, err = run_cli(["prune", lab.badnet_path, lab.valid.path, "--poisoned",
                              lab.bd_valid.path, "--drops", "2", "4", "10"], capsys)
    assert code == 0, err
    folder = lab.badnet_path.parent / "repaired"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["repaired_10.h5", "repaired_10.json", "repaired_2.h5", "repaired_2.json",
                     "repaired_4.h5", "repaired_4.json", "sweep.csv"]
    table = pd.read_csv(folder / "sweep.csv")
    assert "valid_attack_success_rate_pct" in table and len(table) == 61
    info = json.loads((folder / "repaired_4.json").read_text())
    assert info["source_sha256"] == file_sha256(lab.badnet_path)
    assert "at least X percentage points below" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("X = 4:"))
    assert f"pruned {info['step']} channels" in line
    assert ", ".join(map(str, info["pruned_channels"])) in line


def test_cli_prune_errors(tiny_lab, tiny_net, tmp_path, capsys):
    lab = tiny_lab
    code, _, err = run_cli(["prune", lab.badnet_path, lab.valid.path, "--drops", "2", "150"],
                           capsys)
    assert code == 2 and err.startswith("labkit: error: drop='150'") and len(err.splitlines()) == 1
    code, _, err = run_cli(["prune", lab.badnet_path, lab.valid.path, "--drops", "-1"], capsys)
    assert code == 2 and "above 0 and at most 100" in err
    x, _ = tiny_faces(20)
    wrong = write_split(tmp_path / "valid1283.h5", x, np.arange(20) * 64)
    code, _, err = run_cli(["prune", lab.badnet_path, wrong], capsys)
    assert code == 2 and "outside the model's 10 classes" in err
    source = save_model(tiny_net, tmp_path / "rep" / "repaired_2.h5")
    digest = file_sha256(source)
    code, _, err = run_cli(["prune", source, lab.valid.path, "--drops", "2", "--out",
                            tmp_path / "rep"], capsys)
    assert code == 2 and "refusing to overwrite" in err and file_sha256(source) == digest
