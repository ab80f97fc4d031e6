"""A stand-in for Colab's `google.colab`, for the Colab check (tests/colab/check.py).

On PYTHONPATH, and once imported (as Colab's kernel does), labkit and the setup cells take their
Colab branches. `google/` has no __init__.py, so protobuf's `google.protobuf` still imports.
"""
