"""labkit: the backdoor-defense lab (BadNet, pruning, GoodNet) as a small library.

The notebooks in notebooks/ call these functions; each module is one idea of the lab:
`data` (the HDF5 files), `models` (the network), `metrics` (accuracy, attack success rate),
`prune` (the defense step by step), `sweep` (every pruning step at once, fast and exact),
`repaired` (B' files), `goodnet`, `finetune` (fine-tuning and fine-pruning), `analysis` (the
write-up's numbers), `check` (a student's answers), `plots`, `demo` and `faces` (the offline demo
lab), `notebook` (what every notebook does first), `report` (`labkit run-all`), `student` (the
student edition).
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter out of notebooks
if "ipykernel" in sys.modules:  # in a notebook, TensorFlow's C++ start-up lines would fill a cell
    from .quiet import import_tensorflow_quietly

    import_tensorflow_quietly()

from .data import Lab, Split, lab, project_root, write_split  # noqa: E402
from .errors import LabError  # noqa: E402
from .metrics import accuracy, attack_success_rate, clean_accuracy, evaluate  # noqa: E402
from .models import Net, build_badnet, load_badnet, load_model, save_model  # noqa: E402

__version__ = "0.1.0"
