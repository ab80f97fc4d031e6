"""The `labkit` command: `labkit eval`, `labkit demo`, `labkit prune`, ... (`labkit -h` lists them).

Bad input ends in one line `labkit: error: ...` and exit status 2, never a traceback; a
traceback means a bug in labkit and says how to report it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from fractions import Fraction
from pathlib import Path

from .colab import INSTRUCTOR_HINT
from .errors import REPORT_BUGS, LabError, check_whole, escape, one_line
from .files import project_lock
from .quiet import import_tensorflow_quietly


def scale_arg(text: str) -> float:
    """--scale: 1 (raw pixels 0..255) or 1/255 (pixels scaled to 0..1)."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r}: use 1 (raw pixels) or 1/255") from None


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", type=scale_arg, default=None,
                   help="input scaling: 1 = raw pixels 0..255 (the lab's BadNet), 1/255 = pixels "
                        "/ 255 (the CSAW-HackML-2020 BadNets); default: known models get theirs")
    p.add_argument("--trust", action="store_true",
                   help="load models with layers outside the lab's architecture (may run code "
                        "from the file: only for files you trust)")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="clean accuracy and attack success rate of a model",
                       description="Print labkit's rounded table and the two lines the "
                                   "course's evaluation script prints for the same model.")
    p.add_argument("clean", metavar="CLEAN_H5", help="clean data, e.g. data/cl/valid.h5")
    p.add_argument("poisoned", metavar="POISONED_H5", help="poisoned data, e.g. data/bd/bd_valid.h5")
    p.add_argument("model", metavar="MODEL", help="full .h5 model, weights-only .h5 or .keras; "
                                                  "also a GoodNet G.keras saved by labkit")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_model_options(p)
    p.set_defaults(run=_eval, given={"clean": "clean data file",
                                     "poisoned": "poisoned data file", "model": MODEL})


def _eval(args) -> int:
    from .data import Split
    from .goodnet import is_goodnet, load_goodnet
    from .metrics import evaluate, report_lines, table_lines
    from .modelfile import load_model

    if is_goodnet(args.model):
        net = load_goodnet(args.model, trust=args.trust)
    else:
        net = load_model(args.model, scale=args.scale, trust=args.trust)
    clean = Split(args.clean, description="clean data file given", hint="check the path")
    poisoned = Split(args.poisoned, poisoned=True, description="poisoned data file given",
                     hint="check the path")
    result = evaluate(net, clean, poisoned, progress=not args.json)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(table_lines(result) + ["", "As the course's eval.py prints it:"]
                        + report_lines(result)))
    if "warning" in result:
        print(f"labkit: warning: {result['warning']}", file=sys.stderr)
    return 0


def _add_run_all(sub) -> None:
    p = sub.add_parser("run-all", help="run every notebook and write the report (PDF, HTML)",
                       description="Run notebooks 01..06 top to bottom and write the executed "
                                   "notebooks, their HTML pages and report.pdf to report/DATASET/.")
    p.add_argument("--dataset", choices=("demo", "lab"), default="demo",
                   help="demo: the offline demo lab (built first if needed); lab: the course's "
                        "files in data/ and models/ (default: demo)")
    p.set_defaults(run=_run_all)


def _run_all(args) -> int:
    from .report import durations, run_all

    out = run_all(args.dataset)
    times = durations(out)
    print(", ".join(f"{name} {seconds:.1f} s" for name, seconds in times.items())
          + f"; {sum(times.values()):.1f} s in all (papermill's times, kernel start included)")
    try:
        out = out.relative_to(os.getcwd())
    except ValueError:
        pass
    pdf = out / "report.pdf"
    print(f"The report is in {out}/" + (f": open {pdf}" if pdf.is_file() else
                                         " (the notebooks wrote no report.md, so no PDF)"))
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="build the offline demo lab (synthetic faces, five BadNets)",
                       description="Draw the demo faces into data/demo/ and copy the five demo "
                                   "BadNets shipped with labkit into models/demo/ (under a "
                                   "minute, no training); faces already drawn are reused. "
                                   "--retrain DIR trains the BadNets again instead; --reveal DIR "
                                   "writes the grader's poisoned faces (the anonymous BadNet's "
                                   "trigger, which the demo lab never shows the student).")
    p.add_argument("--seed", type=int, default=0, help="seed of the faces (default: 0)")
    p.add_argument("--force", action="store_true", help="draw the faces again (with --retrain: "
                                                        "replace the files in DIR)")
    p.add_argument("--root", default=None, help="project folder to write data/ and models/ in "
                                                "(default: this labkit checkout)")
    p.add_argument("--models", default=None, metavar="DIR",
                   help="take the BadNets from DIR (made by --retrain) instead of the shipped ones")
    p.add_argument("--retrain", default=None, metavar="DIR",
                   help="train the five demo BadNets with labkit's recipes and write them to DIR "
                        "(about 10 minutes on 2 CPU cores); never over the shipped files")
    p.add_argument("--reveal", default=None, metavar="DIR",
                   help="for instructors: write the anonymous BadNet's poisoned validation and "
                        "test faces to DIR/bd/ (not into data/demo/, where the notebooks look)")
    p.set_defaults(run=_demo, writes=_demo_writes)


def _demo_writes(args) -> Path:
    """A file in the folder `labkit demo` writes: DIR of --retrain or --reveal, else data/."""
    from .data import project_root

    if args.retrain or args.reveal:
        return Path(args.retrain or args.reveal) / "x"
    return Path(args.root or project_root()) / "data" / "x"


def _demo(args) -> int:
    from . import demo

    check_whole(args.seed, "seed", 0, MAX_SEED)
    if args.retrain and args.reveal:
        raise LabError("--retrain and --reveal: give one of them")
    if args.reveal:
        for path in demo.reveal(args.reveal, seed=args.seed, force=args.force, root=args.root):
            print(f"wrote {path}")
    elif args.retrain:
        demo.retrain(args.retrain, seed=args.seed, force=args.force)
    else:
        demo.build_demo(args.root, seed=args.seed, force=args.force,
                        models=args.models or demo.SHIPPED)
    return 0


def _add_prune(sub) -> None:
    p = sub.add_parser("prune", help="prune the BadNet's conv_3 channels and save repaired B'",
                       description="Prune conv_3 channels least active first and save B' for "
                                   "each drop X (the rule that picks B' is printed with them).")
    p.add_argument("model", metavar="MODEL",
                   help="the BadNet B: full .h5 model, weights-only .h5 or .keras")
    p.add_argument("valid", metavar="VALID_H5", help="clean validation data, e.g. data/cl/valid.h5")
    p.add_argument("--poisoned", metavar="BD_VALID_H5",
                   help="poisoned validation data, for the attack success rate column")
    p.add_argument("--drops", metavar="X", nargs="+", default=[2, 4, 10],
                   help="validation accuracy drops in percentage points (default: 2 4 10)")
    p.add_argument("--order", choices=("increasing", "decreasing", "random"), default="increasing",
                   help="pruning order by mean activation: increasing is the method, the "
                        "others are ablations (default: increasing)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for repaired_X.h5, repaired_X.json and sweep.csv "
                        "(default: 'repaired' beside MODEL)")
    add_model_options(p)
    p.set_defaults(run=_prune, writes=lambda args: out_dir(args) / "sweep.csv",
                   given={"model": MODEL, "valid": "clean validation file",
                          "poisoned": "poisoned validation file"})


def _prune(args) -> int:
    from .data import Split
    from .files import check_outputs, transaction
    from .head import masking_problem
    from .modelfile import load_model
    from .prune import RULE, check_drop, drop_text, repair
    from .repaired import save_repaired
    from .sweep import sweep

    drops = [check_drop(drop) for drop in args.drops]  # before the sweep, not after it
    out = out_dir(args)
    inputs = tuple(p for p in (args.model, args.valid, args.poisoned) if p)
    check_outputs([out / "sweep.csv", *(out / f"repaired_{drop_text(x)}{ext}"
                                        for x in drops for ext in (".h5", ".json"))], inputs,
                  within=None if args.out else Path(args.model).parent)
    net = load_model(args.model, scale=args.scale, trust=args.trust)
    valid = Split(args.valid, description="clean validation file given")
    bd_valid = (Split(args.poisoned, poisoned=True, description="poisoned validation file given")
                if args.poisoned else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = sweep(net, valid, bd_valid, order=args.order, progress=True)
    if not result.exact_masking:
        print(f"labkit: note: {masking_problem(net)}; each pruned network was run (exact, slow)",
              file=sys.stderr)
    chosen = repair(result, args.drops)
    with transaction():  # all outputs or none
        table = result.to_csv(out / "sweep.csv", protect=inputs)
        written = [save_repaired(r, out, source=args.model, protect=inputs) for r in chosen.values()]
    print(f"Rule: {RULE}.")
    first = result.table.iloc[0]
    asr = (f", attack success rate {first['valid_attack_success_rate']:.2f} %"
           if "valid_attack_success_rate" in first else "")
    print(f"B: validation accuracy {first['valid_accuracy']:.2f} %{asr}; {result.steps} channels "
          f"in {args.order} order of mean activation")
    for repaired, (model_file, json_file) in zip(chosen.values(), written):
        print(repaired)
        print(escape(f"  wrote {model_file} and {json_file.name}"))
    print(escape(f"Sweep table: {table}"))
    return 0


def _add_fine_prune(sub) -> None:
    from .finetune import BATCH, FROZEN, LEARNING_RATE, SEED, STEPS, WATCH_SHARE

    p = sub.add_parser("fine-prune", help="prune the BadNet, then fine-tune it on clean data",
                       description="Fine-pruning: prune conv_3 as `labkit prune` does (B' for "
                                   "--drop X), then train it further on clean validation faces "
                                   f"(Adam; {1 - WATCH_SHARE:.0%} of VALID_H5 to train on, "
                                   "mirrored, shifted and brightened anew each pass, the rest "
                                   f"to watch; {', '.join(FROZEN)} left as it is), keeping the "
                                   "pruned channels at zero. Writes "
                                   "fine_pruned_X.h5 and its JSON record; --drop 0 fine-tunes "
                                   "without pruning and writes fine_tuned.h5.")
    p.add_argument("model", metavar="MODEL",
                   help="the BadNet B: full .h5 model, weights-only .h5 or .keras")
    p.add_argument("valid", metavar="VALID_H5", help="clean validation data, e.g. data/cl/valid.h5")
    p.add_argument("--drop", metavar="X", type=float, default=4,
                   help="validation accuracy drop in percentage points that chooses B' "
                        "(default: 4; 0: fine-tuning alone)")
    p.add_argument("--steps", metavar="N", type=int, default=STEPS,
                   help=f"training steps of --batch-size faces, whatever the size of VALID_H5 "
                        f"(default: {STEPS})")
    p.add_argument("--lr", metavar="LR", type=float, default=LEARNING_RATE,
                   help=f"Adam's peak learning rate, after a warm-up and down to 0 "
                        f"by the end (default: {LEARNING_RATE:g})")
    p.add_argument("--batch-size", metavar="B", type=int, default=BATCH,
                   help=f"training batch size (default: {BATCH})")
    p.add_argument("--seed", type=int, default=SEED, help=f"seed of the split and the training "
                                                          f"order (default: {SEED})")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for the model and its JSON (default: 'repaired' beside MODEL)")
    p.add_argument("--force", action="store_true", help="replace the files of an earlier run")
    add_model_options(p)
    p.set_defaults(run=_fine_prune, writes=lambda args: out_dir(args) / "fine_tuned.h5",
                   given={"model": MODEL, "valid": "clean validation file"})


def out_dir(args) -> Path:
    """--out, or the folder 'repaired' beside the model."""
    return Path(args.out) if args.out else Path(args.model).parent / "repaired"


def _fine_prune(args) -> int:
    from .data import Split
    from .files import check_outputs, transaction
    from .finetune import check_settings, fine_prune, save_fine_tuned, stem
    from .modelfile import load_model
    from .prune import check_drop

    drop = 0.0 if args.drop == 0 else check_drop(args.drop)
    check_settings(args.steps, args.lr, args.batch_size)
    check_whole(args.seed, "seed", 0, MAX_SEED)
    out = out_dir(args)
    inputs = (args.model, args.valid)
    check_outputs([out / f"{stem(drop)}{ext}" for ext in (".h5", ".json")], inputs, args.force,
                  within=None if args.out else Path(args.model).parent)
    net = load_model(args.model, scale=args.scale, trust=args.trust)
    valid = Split(args.valid, description="clean validation file given")
    result = fine_prune(net, valid, drop, args.steps, args.lr, args.batch_size, args.seed,
                        progress=True, curves=False)  # the record needs before/after
    with transaction():  # the model and its record, or neither
        model_file, json_file = save_fine_tuned(result, out, protect=inputs)
    print(f"B: accuracy on the watch part {result.watch_accuracy_badnet:.2f} % "
          f"({result.settings['watch_images']} of the validation faces, never trained on)")
    print(result)
    print(escape(f"  wrote {model_file} and {json_file.name}"))
    return 0


def _add_goodnet(sub) -> None:
    p = sub.add_parser("goodnet", help="GoodNet G(B, B') on lab files or face images",
                       description="G outputs the class B and B' agree on, or N (B's number of "
                                   "classes) meaning 'backdoored'. For an HDF5 file, print its "
                                   "accuracy and the share G flags; for a 55x47 PNG/JPEG face, "
                                   "print its class in 0..N. --save G.keras writes G as one "
                                   "Keras model to hand in.")
    p.add_argument("badnet", metavar="BADNET", help="the BadNet B")
    p.add_argument("repaired", metavar="REPAIRED", help="the repaired B', e.g. repaired_4.h5")
    p.add_argument("inputs", metavar="INPUT", nargs="*",
                   help="lab .h5 data files or 55x47 (height x width) PNG/JPEG face images")
    p.add_argument("--save", metavar="G.keras", default=None,
                   help="write G as one Keras model that keras.models.load_model opens without "
                        "labkit (what the course's eval.py grades)")
    add_model_options(p)
    p.set_defaults(run=_goodnet, writes=lambda args: args.save,
                   given={"badnet": MODEL, "repaired": MODEL})


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _goodnet(args) -> int:
    import numpy as np

    from .data import Split
    from .files import check_outputs
    from .goodnet import GoodNet, check_save, save_goodnet
    from .metrics import accuracy, predict
    from .modelfile import load_model

    paths = [Path(p) for p in args.inputs]
    if not paths and not args.save:
        raise LabError("goodnet: give INPUT files to classify or --save G.keras to write G")
    for path in paths:
        if path.suffix.lower() not in (".h5", ".hdf5", *IMAGE_SUFFIXES):
            raise LabError(f"{path}: give lab .h5 data files or PNG/JPEG face images")
    if args.save:  # before the models are loaded
        check_outputs([check_save(args.save)], protect=(args.badnet, args.repaired))
    goodnet = GoodNet(load_model(args.badnet, scale=args.scale, trust=args.trust),
                      load_model(args.repaired, scale=args.scale, trust=args.trust),
                      name=Path(args.save).stem if args.save else "goodnet")
    if args.save:
        print(f"wrote {save_goodnet(goodnet, args.save, protect=(args.badnet, args.repaired))}")
    images = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES]
    for path in paths:
        if path not in images:
            split = Split(path, kind="test", description="data file given")
            preds, labels = predict(goodnet, split, progress=True)
            flagged = 100.0 * float((preds == goodnet.backdoor_class).mean())
            print(escape(f"{path}: Classification accuracy: {accuracy(preds, labels):.2f} %; "
                         f"flagged as backdoored: {flagged:.2f} %"))
    if images:
        for path, cls in zip(images, goodnet.predict(np.stack([read_face(p) for p in images]))):
            print(escape(f"{path}: {cls}") + (" (backdoored)" if cls == goodnet.backdoor_class else ""))
    return 0


def read_face(path):
    """A PNG/JPEG face as float32 RGB pixels 0..255, shape (55, 47, 3).

    The size is checked from the header before any pixel is decoded (so a decompression bomb
    costs nothing); 16-bit grayscale is scaled to 0..255, every other mode converted by PIL.
    """
    import numpy as np
    from PIL import Image

    from .data import IMAGE_SHAPE
    from .files import check_input

    path = check_input(path, "face image")
    try:
        with Image.open(path) as image:
            if image.size != (IMAGE_SHAPE[1], IMAGE_SHAPE[0]):
                raise LabError(f"{path}: the image is {image.width}x{image.height} pixels (width "
                               "x height); GoodNet takes the lab's 47x55 faces")
            if image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG"):
                gray = np.asarray(image, np.float64) / 257  # 16-bit 0..65535 -> 0..255
                return np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
            if image.mode in ("I", "F"):
                raise LabError(f"{path}: a {image.mode} image (32-bit values) has no fixed pixel "
                               "range; save the face as an 8- or 16-bit PNG or a JPEG")
            return np.asarray(image.convert("RGB"), np.float32)
    except Image.DecompressionBombError:
        raise LabError(f"{path}: the image declares far more pixels than a face; GoodNet takes "
                       "the lab's 47x55 faces") from None
    except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise LabError(f"{path}: cannot be read as an image ({one_line(err)})") from None


def _add_strip(sub) -> None:
    from .strip import BLENDS, FACES, FRR

    p = sub.add_parser("strip", help="STRIP: flag backdoored inputs by the entropy of blends",
                       description="STRIP (Gao et al., ACSAC 2019): superimpose each input on "
                                   "clean validation faces; a low entropy of the model's "
                                   "predictions flags a backdoored input. The threshold is set on "
                                   "VALID_H5 for --frr; prints the false rejections on TEST_H5 and "
                                   "the detections on each POISONED_H5 (named by its file name).")
    p.add_argument("model", metavar="MODEL", help="the BadNet B: full .h5 model, weights-only .h5 or .keras")
    p.add_argument("valid", metavar="VALID_H5", help="clean validation data, e.g. data/cl/valid.h5")
    p.add_argument("test", metavar="TEST_H5", help="clean test data, e.g. data/cl/test.h5")
    p.add_argument("poisoned", metavar="POISONED_H5", nargs="*",
                   help="poisoned test data, e.g. data/bd/bd_test.h5 (none: an unknown trigger)")
    p.add_argument("--blends", metavar="N", type=int, default=BLENDS,
                   help=f"clean faces each input is superimposed on (default: {BLENDS})")
    p.add_argument("--frr", metavar="PERCENT", type=float, default=FRR,
                   help=f"false rejection rate on VALID_H5 that sets the threshold (default: {FRR:g})")
    p.add_argument("--faces", metavar="N", type=int, default=FACES,
                   help=f"faces of each file measured, a seeded sample; 0: all (default: {FACES})")
    p.add_argument("--out", metavar="FILE.json", default=None, help="also write the result here")
    p.add_argument("--force", action="store_true", help="replace the --out file of an earlier run")
    add_model_options(p)
    p.set_defaults(run=_strip, given={"model": MODEL, "valid": "clean validation file",
                                      "test": "clean test file", "poisoned": "poisoned test file"})


def _strip(args) -> int:
    from pathlib import Path

    from .data import Split
    from .files import check_outputs, write_json
    from . import strip
    from .modelfile import load_model

    strip.check_frr(args.frr)
    faces = strip.check_faces(args.faces or None)
    names = [Path(p).stem for p in args.poisoned]
    if len(set(names)) != len(names) or "clean" in names:
        raise LabError(f"poisoned files {', '.join(args.poisoned)}: give each a different name "
                       "(not 'clean'): the name stands for its trigger")
    inputs = (args.model, args.valid, args.test, *args.poisoned)
    if args.out:
        check_outputs([args.out], inputs, args.force)
    net = load_model(args.model, scale=args.scale, trust=args.trust)
    valid = Split(args.valid, description="clean validation file given")
    test = Split(args.test, kind="test", description="clean test file given")
    poisoned = {name: Split(path, kind="test", poisoned=True, description="poisoned test file given")
                for name, path in zip(names, args.poisoned)}
    detector = strip.fit(net, valid, args.blends, args.frr, faces=faces)
    result = strip.evaluate(detector, test, poisoned, faces)
    print("\n".join(escape(line) for line in result.lines()))
    if args.out:
        info = {"method": "STRIP (Gao et al., ACSAC 2019)", "model": str(args.model),
                "blends": args.blends, "frr": args.frr, "weights": list(detector.weights),
                "threshold_bits": detector.threshold, "false_rejection": result.false_rejection,
                "detection": result.detection, "faces_in_file": result.sizes,
                "faces_measured": {n: len(h) for n, h in result.entropies.items()}, "seconds": round(result.seconds, 2)}
        print(escape(f"wrote {write_json(args.out, info, protect=inputs)}"))
    return 0


def _add_cleanse(sub) -> None:
    from .cleanse import FACES, SHORTLIST, STEPS

    p = sub.add_parser("cleanse", help="Neural Cleanse: reverse-engineer triggers, flag the "
                                       "infected class, repair by unlearning",
                       description="Neural Cleanse (Wang et al., IEEE S&P 2019): for every class, "
                                   "the smallest mask and pattern that send clean validation faces "
                                   "to it; a class whose mask norm is an outlier on the small side "
                                   "(anomaly index > 2) is flagged. With more classes than "
                                   "--shortlist, a coarse search screens them first. Writes "
                                   "neural_cleanse.json; with --unlearn also unlearned.h5 (the "
                                   "course's format) and its JSON record.")
    p.add_argument("model", metavar="MODEL", help="the BadNet B: full .h5 model, weights-only .h5 or .keras")
    p.add_argument("valid", metavar="VALID_H5", help="clean validation data, e.g. data/cl/valid.h5")
    p.add_argument("--steps", metavar="N", type=int, default=STEPS,
                   help=f"Adam steps of the full search (default: {STEPS})")
    p.add_argument("--faces", metavar="N", type=int, default=FACES,
                   help=f"clean validation faces the triggers are searched over (default: {FACES})")
    p.add_argument("--shortlist", metavar="K", type=int, default=SHORTLIST,
                   help=f"classes searched in full when the model has more (default: {SHORTLIST})")
    p.add_argument("--unlearn", action="store_true",
                   help="repair the model by unlearning the flagged classes' triggers")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for the outputs (default: 'repaired' beside MODEL)")
    p.add_argument("--force", action="store_true", help="replace the files of an earlier run")
    add_model_options(p)
    p.set_defaults(run=_cleanse, given={"model": MODEL, "valid": "clean validation file"})


def _cleanse(args) -> int:
    from pathlib import Path

    from . import cleanse
    from .data import Split
    from .files import check_outputs, transaction, write_json
    from .modelfile import load_model

    cleanse.check_count("steps", args.steps)
    cleanse.check_count("faces", args.faces)
    cleanse.check_count("shortlist", args.shortlist, 3)
    out = Path(args.out) if args.out else Path(args.model).parent / "repaired"
    inputs = (args.model, args.valid)
    record = out / "neural_cleanse.json"
    repaired = [out / "unlearned.h5", out / "unlearned.json"] if args.unlearn else []
    check_outputs([record, *repaired], inputs, args.force)
    net = load_model(args.model, scale=args.scale, trust=args.trust)
    valid = Split(args.valid, description="clean validation file given")
    result = cleanse.cleanse(net, valid, args.faces, args.steps, args.shortlist, progress=True)
    print("\n".join(result.lines()))
    tuned = cleanse.unlearn(net, valid, result, progress=True) if args.unlearn else None
    info = {"method": "Neural Cleanse (Wang et al., IEEE S&P 2019)", "model": str(args.model),
            **result.settings, "seconds": round(result.seconds, 2),
            "flagged": result.flagged.tolist(), "classes": json.loads(result.table.to_json(orient="records")),
            "screened_out": {str(c): why for c, why in result.screened_out.items()}}
    with transaction():  # the record and the repaired network, or nothing
        written = [write_json(record, info, protect=inputs)]
        if tuned is not None:
            written += cleanse.save_unlearned(tuned, result, repaired[0], protect=inputs)
    if args.unlearn and tuned is None:
        print("nothing flagged: no trigger to unlearn, no repaired model written")
    elif tuned is not None:
        print(f"unlearned: {tuned}")
    for path in written:
        print(escape(f"  wrote {path}"))
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="time the fast pruning sweep against the naive loop and "
                                     "the machine's ceiling",
                       description="On the lab's own files, or the real-size stand-in made from "
                                   "the demo (labkit standin), run the fast sweep, a few steps of "
                                   "the loop students write (extrapolated) and the machine's "
                                   "ceiling (a plain matmul, the convolutions in memory), and "
                                   "report times, ratios, memory and agreement as JSON.")
    p.add_argument("--small", action="store_true", help="10x fewer images, for a quick run")
    p.add_argument("--defenses", action="store_true",
                   help="instead: time STRIP and Neural Cleanse on the demo, Neural Cleanse with "
                        "screening at the lab's 1283 classes, and 06_unknown_trigger.ipynb")
    p.add_argument("--out", metavar="FILE.json", default=None, help="also write the JSON here")
    p.set_defaults(run=_bench, writes=lambda args: args.out)


def _bench(args) -> int:
    from .bench import defenses, run
    from .files import check_outputs, write_json

    if args.out:
        check_outputs([args.out])
    result = defenses(progress=True) if args.defenses else run(small=args.small, progress=True)
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


def _add_standin(sub) -> None:
    p = sub.add_parser("standin", help="a real-size stand-in lab made from the demo (for speed)",
                       description="Write a project folder holding the demo's faces repeated to "
                                   "the lab's image counts and the demo BadNet widened to 1283 "
                                   "classes; run it with LABKIT_HOME=DIR labkit run-all "
                                   "--dataset lab.")
    p.add_argument("out", metavar="DIR", help="the folder to write (not this checkout)")
    p.set_defaults(run=_standin, writes=lambda args: Path(args.out) / "data" / "x")


def _standin(args) -> int:
    from .standin import make_standin

    make_standin(args.out)
    return 0


def _add_student(sub) -> None:
    p = sub.add_parser("student", help="write the student edition of the notebooks (instructors)",
                       description="Write the notebooks with every solution region replaced by "
                                   "'raise NotImplementedError()', hidden tests and instructor-only "
                                   "cells removed and outputs cleared, using nbgrader's "
                                   f"preprocessors ({INSTRUCTOR_HINT}).")
    p.add_argument("out", metavar="OUT_DIR", help="a folder that does not exist yet, or is empty")
    p.add_argument("--install", metavar="SPEC",
                   help="what the setup cells install in Colab: a git URL (git+https://...), "
                        "a wheel URL or a path in /content/drive (default: unset, the cell says so)")
    p.set_defaults(run=_student, writes=lambda args: Path(args.out) / "x.ipynb")


def _student(args) -> int:
    from .student import write_student_edition

    for path in write_student_edition(args.out, install=args.install):
        print(f"wrote {path}")
    if args.install is None:
        print("note: in Colab these notebooks install nothing until their setup cell's `source` is set: "
              "make it again into an empty folder with --install SPEC (docs/colab.md)")
    return 0


def _add_course(sub) -> None:
    from .course import ASSIGNMENT

    p = sub.add_parser("course", help="write an nbgrader course folder to grade the notebooks (instructors)",
                       description="Write a ready nbgrader course folder: nbgrader_config.py, the "
                                   "reference notebooks in source/ASSIGNMENT/ and a README with "
                                   "nbgrader's commands in order (generate_assignment, autograde, "
                                   f"generate_feedback, export). Needs nbgrader: {INSTRUCTOR_HINT}.")
    p.add_argument("out", metavar="DIR", help="a folder that does not exist yet, or is empty")
    p.add_argument("--dataset", choices=("demo", "lab"), default="demo",
                   help="what the notebooks run on when nbgrader grades them: demo (built "
                        "offline) or lab (the course's files, see --data) (default: demo)")
    p.add_argument("--data", metavar="FOLDER", default=None,
                   help="with --dataset lab: the folder holding data/cl, data/bd and "
                        "models/bd_net.h5, linked into DIR/lab (default: the labkit folder you are in)")
    p.add_argument("--assignment", default=ASSIGNMENT,
                   help=f"the assignment's name in nbgrader (default: {ASSIGNMENT})")
    p.add_argument("--notebooks", metavar="NN", nargs="+", default=None,
                   help="only these notebooks, e.g. 02 03 (default: all of 01..06)")
    p.add_argument("--install", metavar="SPEC",
                   help="what the setup cells install in Colab, as for `labkit student` "
                        "(default: left unset, as in the reference notebooks)")
    p.set_defaults(run=_course)


def _course(args) -> int:
    from .course import write_course

    if args.data and args.dataset != "lab":
        raise LabError("--data names the course's files: use it with --dataset lab")
    written = write_course(args.out, args.dataset, args.assignment, args.notebooks, args.data,
                           args.install)
    for path in written:
        print(escape(f"wrote {path}"))
    print(escape(f"Next: cd {args.out} and follow README.md (nbgrader generate_assignment "
                 f"{args.assignment}, ...)"))
    return 0


# run-all's notebooks run in kernels of their own: its process only waits for them
WITHOUT_TENSORFLOW = ("run-all", "student", "course")
COMMANDS = [_add_eval, _add_run_all, _add_demo, _add_prune, _add_fine_prune, _add_goodnet, _add_strip,
            _add_cleanse, _add_bench, _add_standin, _add_student, _add_course]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labkit", description="The backdoor-defense lab: "
                                "evaluate a BadNet, prune it, build a GoodNet.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    for name in WITHOUT_TENSORFLOW:
        sub.choices[name].set_defaults(tensorflow=False)
    p.set_defaults(tensorflow=True)
    return p


MAX_SEED = 2**32 - 1  # numpy's seeds are whole numbers from 0
MODEL = "model file"  # in a command's `given`: the argument names a model, not a data file


def out_dir(args):
    """Where `prune` and `fine-prune` write: --out, else the folder 'repaired' beside MODEL."""
    from pathlib import Path

    return Path(args.out) if args.out else Path(args.model).parent / "repaired"


def check_given(args) -> None:
    """Refuse a missing or malformed input file before TensorFlow starts or anything runs.

    `given` (set by each command's parser) maps argument names to what the file is.
    """
    from .data import Split
    from .files import check_input

    for name, what in getattr(args, "given", {}).items():
        value = getattr(args, name)
        for path in value if isinstance(value, list) else [value] if value is not None else []:
            check_input(path, what)
            if what != MODEL:
                len(Split(path, description=what))  # opens it and checks the lab's layout


def project_of(args):
    """The project folder the command writes in (its data/, models/ or report/), or None."""
    from . import files

    target = args.writes(args) if getattr(args, "writes", None) else None
    return files.project_of(target) if target else None


def main(argv: list[str] | None = None) -> int:
    """Run the command; every failure a user can cause ends in one line and exit status 2."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = parser().parse_args(argv)
    try:
        check_given(args)
        if args.tensorflow:  # only commands that run a network pay for TensorFlow's start-up
            import_tensorflow_quietly()
        with warnings.catch_warnings(), project_lock(project_of(args), f"labkit {args.command}"):
            warnings.simplefilter("ignore")  # numpy's and TensorFlow's would add lines
            return args.run(args)
    except LabError as err:
        return fail(str(err))
    except OSError as err:  # the system refused: disk full, read-only, permissions
        where = f"{err.filename}: " if err.filename else ""
        return fail(f"{where}{err.strerror or one_line(err)}; nothing was written: make room or "
                    "choose another place, then run again")
    except MemoryError:
        return fail("ran out of memory; nothing was written: close other programs and run again")
    except KeyboardInterrupt:
        print("labkit: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(f"labkit: internal error: this is a bug in labkit, not a problem with your files; "
              f"please report it to {REPORT_BUGS} with the command you ran and the lines above",
              file=sys.stderr)
        return 1


def fail(message: str) -> int:
    """Print one line `labkit: error: ...` (control characters escaped); the exit status 2."""
    print(f"labkit: error: {escape(message)}", file=sys.stderr)
    return 2
