"""dataset="lab": every missing course file is named at once, with the folder it goes in."""
import pytest

import labkit
from labkit import notebook


def test_missing_course_files_are_all_named_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    lab = labkit.lab("lab")
    present = lab.split("test").path
    present.parent.mkdir(parents=True)
    present.write_bytes(b"")
    with pytest.raises(labkit.LabError) as err:
        notebook.start("lab")
    message = str(err.value)
    assert "\n" not in message and "4 of the course's 5 files missing" in message
    for name in ("valid", "bd_valid", "bd_test"):
        path = lab.split(name).path
        assert str(path) in message and f"{path.name} in {path.parent}/" in message
    assert f"bd_net.h5 in {lab.badnet_path.parent}/" in message
    assert str(present) not in message
