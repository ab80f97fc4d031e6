"""One way down: no labkit module imports a module that imports it back, at the top or inside a
function (tests/module_map.py reads the imports)."""
from module_map import cycles, imports


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(imports()) == []


def test_a_circle_through_a_function_level_import_is_found(tmp_path):
    (tmp_path / "low.py").write_text("def f():\n    from .high import g\n")
    (tmp_path / "high.py").write_text("from . import low\nimport labkit.mid as m\n")
    (tmp_path / "mid.py").write_text("")
    graph = imports(tmp_path)
    assert graph == {"low": {"high"}, "high": {"low", "mid"}, "mid": set()}
    assert cycles(graph) == [["high", "low", "high"]]
