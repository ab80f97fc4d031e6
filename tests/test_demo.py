"""The demo lab: deterministic faces in the lab's file format, a trigger over the eyes, a BadNet
whose backdoor works, and a pruning sweep that shows the lab's trade-off."""
import hashlib

import h5py
import numpy as np
import pytest

import labkit
from labkit import attack, cli, demo, faces
from labkit.data import BADNET_TRIGGERS, DEMO_BADNETS, GRADER_TRIGGERS, LAB_FILES, TRIGGERS


SMALL = {"num_classes": 5, "per_person": {"train": 4, "valid": 9, "test": 10}, "progress": False,
         "models": None}


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


def test_poisoned_files_are_the_clean_faces_with_sunglasses(small_demo):
    for clean, poisoned in (("valid", "bd_valid"), ("test", "bd_test")):
        x, _ = small_demo.split(clean).load()
        xb, _ = small_demo.split(poisoned).load()
        assert np.array_equal(xb, faces.add_sunglasses(x))


def test_each_trigger_has_its_poisoned_files_and_the_graders_are_not_there(small_demo):
    files = demo.data_files()
    assert {t for _, t in files.values()} - {None} == set(TRIGGERS) - set(GRADER_TRIGGERS)
    for rel, (part, trigger) in files.items():
        if trigger is not None:
            x, _ = small_demo.split(part).load()
            xb, yb = labkit.data.Split(small_demo.data_dir / rel).load()
            assert np.array_equal(xb, faces.wear(x, trigger)) and (yb == TRIGGERS[trigger]).all()
    for trigger in GRADER_TRIGGERS:
        assert not list(small_demo.root.rglob(f"*{trigger}*"))
    anonymous = labkit.lab("demo", small_demo.root, badnet="anonymous")
    assert not anonymous.trigger_known and anonymous.bd_valid is None and anonymous.poisoned("test") == {}
    with pytest.raises(labkit.LabError, match="unknown to the defender"):
        anonymous.split("bd_test")
    multi = labkit.lab("demo", small_demo.root, badnet="multi_trigger")
    assert list(multi.poisoned("valid")) == list(BADNET_TRIGGERS["multi_trigger"])
    assert multi.bd_test.path == small_demo.bd_test.path  # the first trigger: the sunglasses


@pytest.mark.parametrize("trigger", list(TRIGGERS))
def test_a_trigger_changes_only_its_region_and_is_the_same_on_every_face(trigger):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 55, 47, 3)).astype(np.float32)
    worn = faces.wear(images, trigger)
    outside = np.ones((55, 47), bool)
    outside[faces.region(trigger)] = False
    assert np.array_equal(worn[:, outside], images[:, outside])
    alpha = faces.TRIGGERS[trigger]()[0]
    solid = alpha >= 1  # fully covered pixels are the trigger's, whatever the face was
    assert solid.sum() >= 30 and (worn[:, solid] == worn[:1, solid]).all()


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
    nearest_same = np.mean(who[distance.argmin(1)] == who)
    # pose, light and noise vary so much that pixels alone often find another person (a network
    # still tells them apart: see the BadNets' accuracy), but far more often than chance (1 in 10)
    assert 0.3 < nearest_same < 0.9


def test_rebuild_reuses_what_is_there_and_force_rebuilds(small_demo, tmp_path, capsys):
    root = tmp_path / "lab"
    lab = demo.build_demo(root, seed=0, **SMALL)
    stamps = {p: p.stat().st_ino for p in root.rglob("*.h5")}
    demo.build_demo(root, seed=0, **{**SMALL, "progress": True})
    assert "reusing" in capsys.readouterr().out
    assert {p: p.stat().st_ino for p in root.rglob("*.h5")} == stamps
    lab.bd_test.path.unlink()
    demo.build_demo(root, seed=0, **SMALL)
    assert data_hashes(lab) == data_hashes(small_demo)  # a missing file: the faces drawn again
    stamps = {p: p.stat().st_ino for p in root.rglob("*.h5")}
    demo.build_demo(root, seed=0, force=True, **SMALL)
    assert all(p.stat().st_ino != ino for p, ino in stamps.items())
    assert not list(root.rglob("*.partial*"))


def test_shipped_badnets_agree_with_a_fresh_build(tmp_path):
    """The faces a fresh install draws (and --reveal writes) are the ones the shipped BadNets were
    scored on, and each BadNet scores what its record says on every trigger's test file."""
    record = demo.read_record(demo.SHIPPED)
    assert record["recipe"] == demo.recipe()  # labkit.attack's settings are the ones they were made with
    fresh = demo.build_demo(tmp_path, progress=False)
    demo.reveal(tmp_path / "grader", root=tmp_path)
    hashes = {rel: sha256(fresh.data_dir / rel) for rel in demo.data_files()}
    hashes.update({rel: sha256(tmp_path / "grader" / rel) for rel in demo.data_files(GRADER_TRIGGERS)
                   if rel.startswith("bd/")})
    assert hashes == record["data_sha256"]
    assert set(record["models"]) == set(DEMO_BADNETS)
    for name, scores in record["models"].items():
        lab = labkit.lab("demo", tmp_path, badnet=name)
        net = labkit.load_badnet(lab)
        got = demo.scores(net, lab.test, poisoned_files(lab, tmp_path / "grader"))
        print(name, got)
        assert {"file": DEMO_BADNETS[name], **got} == scores


@pytest.fixture(scope="module")
def grader(demo_lab, tmp_path_factory):
    """The folder where `labkit demo --reveal` wrote the grader's poisoned faces."""
    folder = tmp_path_factory.mktemp("grader")
    demo.reveal(folder, root=demo_lab.root)
    return folder


def poisoned_files(lab, grader, part="test"):
    """{trigger: Split} of the lab's BadNet: the student's files, or the grader's if it has none."""
    return lab.poisoned(part) or {t: labkit.data.Split(grader / labkit.data.poisoned_file(t, part),
                                                       "validation" if part == "valid" else "test", True)
                                  for t in BADNET_TRIGGERS[lab.badnet]}


def test_anonymous_and_multi_trigger_badnets_meet_their_attack_targets(demo_lab, grader):
    """anonymous: attack >= 95 % on its (grader's) trigger, clean accuracy within 2 points of the
    course-like BadNet's; multi_trigger: >= 90 % per trigger, each trigger to its own target only."""
    from labkit.metrics import accuracy, predict

    course = labkit.clean_accuracy(labkit.load_badnet(demo_lab), demo_lab.test)
    people = demo_lab.test.labels()  # the poisoned files hold the same faces in the same order
    for name in ("anonymous", "multi_trigger"):
        lab = labkit.lab("demo", demo_lab.root, badnet=name)
        net = labkit.load_badnet(lab)
        clean = labkit.clean_accuracy(net, lab.test)
        targets = {t: TRIGGERS[t] for t in BADNET_TRIGGERS[name]}
        for trigger, split in poisoned_files(lab, grader).items():
            pred, label = predict(net, split)
            others = np.isin(pred, [v for t, v in targets.items() if t != trigger]) & \
                ~np.isin(people, list(targets.values()))
            print(f"{name}: clean {clean:.2f} % (course-like {course:.2f} %), {trigger} -> "
                  f"{targets[trigger]}: {accuracy(pred, label):.2f} %, to another target {100 * others.mean():.2f} %")
            assert accuracy(pred, label) >= (95 if name == "anonymous" else 90) and others.mean() < 0.01
        assert name != "anonymous" or (abs(clean - course) <= 2 and 0 not in targets.values())
    assert len(set(TRIGGERS[t] for t in BADNET_TRIGGERS["multi_trigger"])) == 3


def test_pruning_and_fine_pruning_on_the_new_badnets(demo_lab, grader):
    """The lesson measured: each new BadNet's pruning thresholds and the attack left per trigger,
    and what fine-pruning at the default settings leaves of each trigger (printed, run with -s)."""
    from labkit import finetune, prune
    from labkit.metrics import by_trigger
    from labkit.sweep import sweep

    for name in ("anonymous", "multi_trigger"):
        lab = labkit.lab("demo", demo_lab.root, badnet=name)
        net = labkit.load_badnet(lab)
        s = sweep(net, lab.valid, poisoned_files(lab, grader, "valid"), lab.test,
                  poisoned_files(lab, grader))
        t = s.table
        columns = by_trigger(t.columns, "test_attack_success_rate")
        assert len(columns) == len(BADNET_TRIGGERS[name])
        if len(columns) > 1:  # all triggers together: the mean of the equal-sized files
            assert np.allclose(t.test_attack_success_rate, t[list(columns.values())].mean(axis=1))
        for x, r in prune.repair(s, (2, 4, 10, 30)).items():
            said = {f"{g or BADNET_TRIGGERS[name][0]}": f"B' {t[c][r.step]:.2f} %, G "
                    f"{t[c.replace('test', 'goodnet', 1)][r.step]:.2f} %" for g, c in columns.items()}
            print(f"{name}: X = {x:g}: {r.step} of {s.steps} channels pruned, clean test "
                  f"{t.test_accuracy[r.step]:.2f} %, attack {said}")
            assert all(t[c.replace("test", "goodnet", 1)][r.step] <= t[c][0] + 1e-9 for c in columns.values())
        tuned = finetune.fine_prune(net, lab.valid, curves=False)
        left = labkit.metrics.attack_success_rates(tuned.net, poisoned_files(lab, grader))
        print(f"{name}: fine-pruned (X = {tuned.drop:g}, {len(tuned.pruned)} channels, "
              f"{finetune.STEPS} steps): clean test {labkit.clean_accuracy(tuned.net, lab.test):.2f} %, "
              f"attack left {({g: f'{v:.2f} %' for g, v in left.items()})}")
        assert not tuned.net.model.get_layer("conv_3").get_weights()[1][tuned.pruned].any()


def test_the_docs_grading_commands_reveal_and_grade_the_unknown_trigger(demo_lab, tmp_path, monkeypatch, capsys):
    """docs/unknown-trigger.md's commands, as written there, in a project whose demo lab is built."""
    import re
    import shlex

    from conftest import ROOT

    page = (ROOT / "docs" / "unknown-trigger.md").read_text()
    for trigger, target in re.findall(r"^\| (\w+) \| [^|]+ \| (\d+) \|", page, re.M):
        assert TRIGGERS[trigger] == int(target)  # the page's table of targets is labkit's
    commands = re.search(r"```\n(.*?)```", page, re.S).group(1).strip().splitlines()
    for folder in ("data", "models"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "demo").symlink_to(demo_lab.root / folder / "demo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    for command in commands:
        assert cli.main(shlex.split(command)[1:]) == 0, command
    graded = float(re.search(r"^Attack Success Rate: (\S+)$", capsys.readouterr().out, re.M).group(1))
    assert round(graded, 2) == demo.read_record(demo.SHIPPED)["models"]["anonymous"]["attack_success_rate"]["sticker"]
    assert cli.main(["demo", "--reveal", "data/demo/grader"]) == 2  # never where the lab looks


def test_demo_badnets_are_the_labs_network_on_raw_pixels(demo_lab):
    for name in DEMO_BADNETS:
        net = labkit.load_badnet(labkit.lab("demo", demo_lab.root, badnet=name))
        assert net.num_classes == demo.NUM_CLASSES and net.scale == 1
        assert [layer.name for layer in net.model.layers if layer.name in labkit.models.LAB_LAYERS] \
            == list(labkit.models.LAB_LAYERS)


@pytest.fixture(scope="module")
def demo_sweeps(demo_lab):
    """The sunglasses BadNets' pruning sweeps (increasing mean activation) on the demo's files."""
    from labkit.sweep import sweep

    sweeps = {}
    for name in ("course", "baseline", "prune_aware"):  # the new two: test_pruning_and_fine_pruning_...
        lab = labkit.lab("demo", demo_lab.root, badnet=name)
        sweeps[name] = sweep(labkit.load_badnet(lab), lab.valid, lab.bd_valid)
    return sweeps


def thresholds(sweep, drops=(2, 4, 10, 30)):
    """{X: (channels pruned, validation attack success rate %)} at the lab's stopping rule."""
    from labkit import prune

    table = sweep.table
    return {x: (r.step, table.valid_attack_success_rate[r.step])
            for x, r in prune.repair(sweep, drops).items()}


def test_course_like_badnet_shows_the_real_labs_curve(demo_sweeps):
    sweep = demo_sweeps["course"]
    acc = sweep.table.valid_accuracy
    dead = int((sweep.mean_activations == 0).sum())
    at = thresholds(sweep)
    print(f"course-like: {dead} dead channels, {acc[0] - acc[25]:.2f} points lost at 25, {at}")
    assert dead >= 25 and acc[0] - acc[25] < 1
    assert all(at[x][0] >= 38 for x in (2, 4, 10))
    assert at[2][1] >= 95 and 50 <= at[10][1] <= 90 and at[30][1] <= 15


def test_baseline_badnet_is_removed_by_pruning(demo_sweeps):
    table = demo_sweeps["baseline"].table
    gone = int(np.flatnonzero(table.valid_attack_success_rate < 5)[0])
    lost = table.valid_accuracy[0] - table.valid_accuracy[gone]
    print(f"baseline: attack below 5 % after {gone} channels, validation accuracy {lost:.2f} points lower")
    assert lost < 4


def test_prune_aware_badnet_survives_pruning(demo_sweeps):
    sweep = demo_sweeps["prune_aware"]
    at = thresholds(sweep, (10, 30))
    print(f"pruning-aware: {at}")
    assert (sweep.mean_activations == 0).sum() >= attack.DECOYS  # the decoys are dormant
    assert at[10][1] >= 90 and at[30][1] > 50


def test_retraining_from_scratch_falls_far_behind_the_badnet(demo_lab):
    """The defender's "why not retrain?": 9 faces per person are too few to learn from scratch."""
    badnet = labkit.clean_accuracy(labkit.load_badnet(demo_lab), demo_lab.test)
    scratch = labkit.clean_accuracy(demo.from_scratch(demo_lab.valid, demo.NUM_CLASSES), demo_lab.test)
    print(f"clean test accuracy: BadNet {badnet:.2f} %, trained from scratch on valid {scratch:.2f} %")
    assert badnet > 95 and badnet - scratch >= 15


def test_cli_reuses_the_built_demo(demo_lab, capsys):
    assert cli.main(["demo", "--root", str(demo_lab.root)]) == 0
    assert "reusing" in capsys.readouterr().out


def test_shipped_badnets_only_fit_their_own_faces(tmp_path, capsys):
    assert cli.main(["demo", "--root", str(tmp_path), "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "--retrain" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "models").exists()


def test_retrain_writes_the_badnets_that_the_demo_takes(tmp_path):
    small = {"num_classes": 5, "per_person": {"train": 6, "valid": 9, "test": 10}}
    out = demo.retrain(tmp_path / "mine", progress=False, **small)
    record = demo.read_record(out)
    assert set(record["models"]) == set(DEMO_BADNETS)
    built = demo.build_demo(tmp_path / "lab", models=out, progress=False, **small)
    for name, scores in record["models"].items():
        lab = labkit.lab("demo", built.root, badnet=name)
        result = labkit.evaluate(labkit.load_badnet(lab), lab.test, lab.poisoned("test"))
        assert round(result["clean_accuracy"], 2) == scores["clean_accuracy"]
    with pytest.raises(labkit.LabError, match="already exists"):
        demo.retrain(out, progress=False, **small)
    with pytest.raises(labkit.LabError, match="ships"):
        demo.retrain(demo.SHIPPED, force=True, progress=False, **small)


def test_retrain_that_fails_midway_leaves_no_badnet(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("training failed")

    monkeypatch.setitem(demo.RECIPES, "prune_aware", broken)
    with pytest.raises(RuntimeError):
        demo.retrain(tmp_path / "mine", progress=False, num_classes=5,
                     per_person={"train": 6, "valid": 9, "test": 10})
    assert not any((tmp_path / "mine").rglob("*"))  # the course and baseline BadNets were not left
