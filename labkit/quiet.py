"""TensorFlow started without its start-up chatter (oneDNN, CUDA probes, retracing warnings)."""
from __future__ import annotations

import os
import sys


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines kept off stderr, and its Python warnings off.

    The C++ lines are written to file descriptor 2 before any logging setting applies; in a
    terminal they bury labkit's one-line errors, in a notebook they fill the cell's output.
    """
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    tf.get_logger().setLevel("ERROR")  # "triggered tf.function retracing" and the like
