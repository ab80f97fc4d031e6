"""labkit: the backdoor-defense lab (BadNet, pruning, GoodNet) as a small library.

The notebooks in notebooks/ call these functions; each module is one idea of the lab:
`data` (the HDF5 files), `models` (the network), `modelfile` (loading a model file safely),
`metrics` (accuracy, attack success rate), `prune` (the defense step by step), `sweep` (every
pruning step at once, fast and exact), `repaired` (B' files), `goodnet`, `finetune`
(fine-tuning and fine-pruning), `strip` and `cleanse` (STRIP and Neural Cleanse: defenses that
look for the trigger), `triggers` (which poisoned test files a lab has), `analysis` (the
write-up's numbers), `check` (a student's answers), `plots`, `demo` and `faces` (the offline demo
lab), `notebook` (what every notebook does first), `report` (`labkit run-all`), `student` (the
student edition).
"""
import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter out of notebooks
if "ipykernel" in sys.modules:  # in a notebook, TensorFlow's C++ start-up lines would fill a cell
    from .quiet import import_tensorflow_quietly

    import_tensorflow_quietly()

__version__ = "0.1.0"

# the names notebooks use as `labkit.<name>`, imported on first use, so that `labkit --help`
# and argument errors answer before numpy, h5py or TensorFlow are loaded
_NAMES = {"data": ("Lab", "Split", "lab", "project_root", "write_split"), "errors": ("LabError",),
          "metrics": ("accuracy", "attack_success_rate", "clean_accuracy", "evaluate"),
          "modelfile": ("load_badnet", "load_model"), "models": ("Net", "build_badnet", "save_model")}
_MODULE = {name: module for module, names in _NAMES.items() for name in names}


def __getattr__(name: str):
    if name in _MODULE:
        return getattr(importlib.import_module(f".{_MODULE[name]}", __name__), name)
    try:
        return importlib.import_module(f".{name}", __name__)  # labkit.data, labkit.prune, ...
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise  # the module exists but needs a package that is missing
        raise AttributeError(f"module 'labkit' has no attribute {name!r}") from None


__all__ = sorted(_MODULE)
