"""Fine-tuning and fine-pruning: pruned channels stay zero, seeded, NaN refused, the course's eval
opens the result, `labkit fine-prune` refuses bad input before training, and the demo's target run."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from hostile import forbid, refused

import labkit
from labkit import cli, finetune
from labkit.attack import fold_inputs
from labkit.errors import LabError
from labkit.files import read_json
from labkit.metrics import attack_success_rate, clean_accuracy
from labkit.models import copy_net, zeroed_channels
from labkit.prune import prune

STEPS = 4  # enough to move every trained weight on the tiny lab (32 faces to train on)


@pytest.fixture
def no_training(monkeypatch):
    forbid(monkeypatch, finetune, "fine_prune", "training started")


def test_pruned_channels_stay_exactly_zero_and_the_rest_trains(tiny_net, tiny_lab):
    pruned = prune(tiny_net, [3, 7, 11])
    result = finetune.fine_prune(pruned, tiny_lab.valid, 0, steps=STEPS, lr=1e-2)
    kernel, bias = result.net.model.get_layer("conv_3").get_weights()
    assert not kernel[..., [3, 7, 11]].any() and not bias[[3, 7, 11]].any()
    assert result.pruned.tolist() == [3, 7, 11]
    before = pruned.model.get_layer("conv_3").get_weights()[0]
    assert np.abs(kernel - before).max() > 1e-4  # the other channels did train
    assert pruned.model.get_layer("conv_3").get_weights()[0][..., 3].any() == 0  # input left alone


def test_frozen_layers_stay_and_stored_activations_fit_one_badnet(tiny_net, tiny_lab):
    stored = finetune.store(tiny_net, tiny_lab.valid, steps=1)
    result = finetune.fine_tune(tiny_net, stored)
    for name in ("conv_1", "conv_2"):
        layer = result.net.model.get_layer(name)
        assert layer.trainable
        for new, old in zip(layer.get_weights(), tiny_net.model.get_layer(name).get_weights()):
            assert np.array_equal(new, old)
    assert result.settings["frozen_layers"] == ["conv_1", "conv_2"]
    other = with_weights(tiny_net, "conv_2", lambda k: k * 1.01)  # another pool_2
    with pytest.raises(LabError, match="conv_1, conv_2 differ from those of tiny"):
        finetune.fine_tune(other, stored)
    with pytest.raises(LabError, match="stored activations are of tiny .* with 1 steps of 64"):
        finetune.fine_prune(other, tiny_lab.valid, 0, steps=1, stored=stored)


def test_augment_mirrors_shifts_and_brightens_within_bounds():
    rng = np.random.default_rng(0)
    x = rng.random((200, 55, 47, 3), dtype=np.float32)
    before = x.copy()
    out = finetune.augment(x, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert not np.array_equal(out, x) and np.array_equal(x, before)  # a new array, x left alone
    same = finetune.augment(x, np.random.default_rng(1))
    assert np.array_equal(out, same)  # seeded
    plain = finetune.augment(x, np.random.default_rng(2), shift=0, brightness=0)
    assert all(np.array_equal(p, f) or np.array_equal(p, f[:, ::-1]) for p, f in zip(plain, x))
    assert 40 < sum(np.array_equal(p, f[:, ::-1]) for p, f in zip(plain, x)) < 160  # about half mirrored


def test_without_augmentation_every_pass_shows_the_faces_as_they_are(tiny_net, tiny_lab):
    stored = finetune.store(tiny_net, tiny_lab.valid, steps=STEPS, augmentation=False)
    assert len(stored.train) == 1 and stored.settings["augmentation"] is None
    (x, _), _ = finetune.split_valid(tiny_lab.valid)
    assert stored.train.shape[1] == len(x) and len(set(stored.order)) == len(x)  # several passes
    result = finetune.fine_tune(tiny_net, stored)
    assert result.settings["augmentation"] is None and len(result.history) == STEPS + 1


def test_a_channel_that_moved_is_caught(tiny_net):
    assert zeroed_channels(tiny_net).size == 0
    with pytest.raises(LabError, match=r"pruned conv_3 channels \[5\] changed"):
        finetune.check_zeroed(tiny_net, [5])


def test_seeded_and_the_test_sets_only_watched(tiny_net, tiny_lab):
    measure = {"test_accuracy": tiny_lab.test, "test_attack_success_rate": tiny_lab.bd_test}
    stored = finetune.store(tiny_net, tiny_lab.valid, steps=STEPS, measure=measure)
    a = finetune.fine_prune(tiny_net, tiny_lab.valid, 0, steps=STEPS, stored=stored)
    b = finetune.fine_prune(tiny_net, tiny_lab.valid, 0, steps=STEPS)
    finetune.fine_prune(tiny_net, tiny_lab.valid, 0, steps=STEPS, lr=1e-3, stored=stored)
    again = finetune.fine_prune(tiny_net, tiny_lab.valid, 0, steps=STEPS, stored=stored)
    for wa, wb, wc in zip(*(r.net.model.get_weights() for r in (a, b, again))):
        assert np.array_equal(wa, wb)  # measuring the test sets changed nothing
        assert np.array_equal(wa, wc)  # nor did a run before it on the same stored activations
    assert list(a.history.step) == list(range(STEPS + 1)) and "test_accuracy" in a.history
    assert a.history.test_accuracy.iloc[-1] == pytest.approx(clean_accuracy(a.net, tiny_lab.test))
    assert a.history.test_accuracy.iloc[0] == pytest.approx(clean_accuracy(tiny_net, tiny_lab.test))
    c = finetune.fine_prune(tiny_net, tiny_lab.valid, 0, steps=STEPS, seed=1)
    kernel = [r.net.model.get_layer("conv_3").get_weights()[0] for r in (a, c)]
    assert not np.array_equal(*kernel)


def test_the_split_is_seeded_and_disjoint(tiny_lab):
    (xt, yt), (xw, yw) = finetune.split_valid(tiny_lab.valid)
    (xt2, _), _ = finetune.split_valid(tiny_lab.valid)
    x, _ = tiny_lab.valid.load()
    assert len(yt) + len(yw) == len(x) and len(yw) == round(len(x) * finetune.WATCH_SHARE)
    assert np.array_equal(xt, xt2)
    rows = {r.tobytes() for r in x.reshape(len(x), -1)}
    assert {r.tobytes() for r in xt.reshape(len(xt), -1)}.isdisjoint(r.tobytes() for r in xw.reshape(len(xw), -1))
    assert len(rows) == len(x)
    with pytest.raises(LabError, match="uses validation data only"):
        finetune.split_valid(tiny_lab.test)


def test_how_the_input_scale_is_stored_does_not_matter(tiny_net, tiny_lab):
    raw = copy_net(tiny_net)  # the same network taking raw pixels: 1/255 folded into conv_1
    raw.model, raw.scale = fold_inputs(raw.model, 255, centre=0), 1.0
    x, _ = tiny_lab.test.load()
    assert (raw.predict(x) == tiny_net.predict(x)).mean() > 0.97
    a = finetune.fine_prune(tiny_net, tiny_lab.valid, 0, steps=STEPS)
    b = finetune.fine_prune(raw, tiny_lab.valid, 0, steps=STEPS)
    assert b.net.scale == 1.0 and a.net.scale == tiny_net.scale
    assert (a.net.predict(x) == b.net.predict(x)).mean() > 0.97  # both trained on pixels / 255


def with_weights(net, layer, change):
    out = copy_net(net)
    kernel, bias = out.model.get_layer(layer).get_weights()
    out.model.get_layer(layer).set_weights([change(kernel), bias])
    return out


def test_nan_weights_are_refused(tiny_net, tiny_lab, tmp_path):
    exploding = with_weights(tiny_net, "output", lambda k: k * 3e38)  # logits overflow: NaN loss
    with pytest.raises(LabError, match="diverged: the network has NaN"):
        finetune.fine_prune(exploding, tiny_lab.valid, 0, steps=1)
    good = finetune.fine_prune(tiny_net, tiny_lab.valid, 0, steps=1)
    good.net = with_weights(good.net, "fc_1", lambda k: np.where(k == k.flat[0], np.nan, k))
    with pytest.raises(LabError, match="NaN"):
        finetune.save_fine_tuned(good, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_saved_result_opens_as_the_courses_eval_opens_it(tiny_net, tiny_lab, tmp_path):
    import h5py
    import keras

    result = finetune.fine_prune(tiny_net, tiny_lab.valid, drop=2, steps=STEPS)
    model_file, json_file = finetune.save_fine_tuned(result, tmp_path)
    assert model_file.name == "fine_pruned_2.h5"
    with h5py.File(tiny_lab.test.path, "r") as f:  # as eval.py reads it: no scaling
        x, y = np.asarray(f["data"]).transpose(0, 2, 3, 1), np.asarray(f["label"])
    model = keras.models.load_model(model_file)
    graded = np.argmax(model.predict(x, verbose=0), axis=1)
    assert np.array_equal(graded, result.net.predict(x))
    assert np.mean(graded == y) * 100 == pytest.approx(clean_accuracy(result.net, tiny_lab.test))
    info = read_json(json_file, partner=model_file)
    assert info["pruned_channels"] == result.pruned.tolist() and info["step"] == len(result.pruned)
    assert info["steps"] == STEPS and info["watch_accuracy_after"] == result.history.watch_accuracy.iloc[-1]
    reloaded = labkit.load_model(model_file)
    assert not reloaded.model.get_layer("conv_3").get_weights()[1][result.pruned].any()


def args(lab, out, *extra):
    return ["fine-prune", lab.badnet_path, lab.valid.path, "--out", out, "--steps", 1, *extra]


@pytest.mark.parametrize("extra, expect", [
    (["--drop", "150"], "drop=150.0: give the allowed fall"),
    (["--drop", "-1"], "drop=-1.0: give the allowed fall"),
    (["--steps", "0"], "steps 0: give a whole number from 1 to 1000000"),
    (["--steps", "100000000"], "steps 100000000: give a whole number from 1 to 1000000"),
    (["--seed", "-1"], "seed -1: give a whole number from 0 to"),
    (["--lr", "0"], "learning rate 0.0: give a number above 0"),
    (["--lr", "nan"], "learning rate nan: give a number above 0"),
    (["--batch-size", "0"], "batch size 0: give a whole number"),
])
def test_bad_settings_refused_before_training(tiny_lab, tmp_path, capsys, no_training, extra, expect):
    refused(capsys, args(tiny_lab, tmp_path / "out", *extra), expect, tmp_path)


def test_bad_files_and_outputs_refused_before_training(tiny_lab, tmp_path, capsys, no_training):
    refused(capsys, ["fine-prune", tmp_path / "nope.h5", tiny_lab.valid.path, "--out", tmp_path],
            "nope.h5: model file not found", tmp_path)
    refused(capsys, args(tiny_lab, tiny_lab.badnet_path), "bd_net.h5: is a file, so", tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "fine_pruned_4.json").mkdir()
    refused(capsys, args(tiny_lab, out), "fine_pruned_4.json: the output exists and is not a file",
            tmp_path)
    (out / "fine_pruned_4.json").rmdir()
    (out / "fine_pruned_4.h5").write_text("an earlier run")
    refused(capsys, args(tiny_lab, out), "fine_pruned_4.h5: already exists; pass --force", tmp_path)


def test_fine_prune_command_writes_the_pair_and_force_replaces(tiny_lab, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main([str(a) for a in args(tiny_lab, out, "--drop", "0")]) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned B (no pruning); 1 step in" in printed and "fine_tuned.h5" in printed
    info = json.loads((out / "fine_tuned.json").read_text())
    assert info["method"] == "fine-tuning" and info["pruned_channels"] == [] and info["seed"] == 0
    assert cli.main([str(a) for a in args(tiny_lab, out, "--drop", "0")]) == 2
    assert cli.main([str(a) for a in args(tiny_lab, out, "--drop", "0", "--force")]) == 0


def test_prune_aware_target_on_the_demo(demo_lab, tmp_path, capsys):
    """Fine-pruning the pruning-aware BadNet at X = 4 with the defaults: printed, then checked."""
    lab = labkit.lab("demo", badnet="prune_aware")
    start = time.perf_counter()  # as a user runs it: a fresh process, TensorFlow's default kernels
    # (in this process, `demo --retrain`'s tests may have made TensorFlow deterministic, which
    # changes the arithmetic and so single runs by a point or two)
    proc = subprocess.run([sys.executable, "-m", "labkit", "fine-prune", str(lab.badnet_path),
                           str(lab.valid.path), "--drop", "4", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seconds = time.perf_counter() - start
    B, fp = labkit.load_badnet(lab), labkit.load_model(tmp_path / "fine_pruned_4.h5")
    b_acc, acc = clean_accuracy(B, lab.test), clean_accuracy(fp, lab.test)
    asr = attack_success_rate(fp, lab.bd_test)
    with capsys.disabled():
        print(f"\nfine-pruned prune_aware at X = 4: clean test accuracy {acc:.2f} % (B {b_acc:.2f} %, "
              f"{b_acc - acc:.2f} points below), attack success rate {asr:.2f} %, {seconds:.1f} s")
    # the target the defaults were chosen for (docs/experiments/fine-tuning.md); the time
    # is printed, not asserted: speed is shown by commands, not unit tests
    assert asr < 5 and b_acc - acc <= 3


def test_05_section_of_the_report_replaces_its_earlier_run(tmp_path):
    from labkit.analysis import add_section

    report = tmp_path / "report.md"
    report.write_text("# Report\n\n## 4. Ablation\n\nold text\n")
    add_section(report, "## 5. Beyond pruning", ["first run"])
    add_section(report, "## 5. Beyond pruning", ["second run", ""])
    text = report.read_text()
    assert text == "# Report\n\n## 4. Ablation\n\nold text\n\n## 5. Beyond pruning\n\nsecond run\n"
