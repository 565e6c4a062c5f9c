"""Atomic writes: a new file appears whole, with the permissions an ordinary write would give it."""

import json
import os
import stat

from bench.io import FILE_MODE, write_json_atomic, write_text_atomic


def test_atomic_files_get_the_usual_permissions(tmp_path):
    path = write_text_atomic(tmp_path / "a.txt", "hello")
    assert path.read_text() == "hello"
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(plain).st_mode) == FILE_MODE


def test_an_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    write_json_atomic(tmp_path / "m.json", {"a": 1})
    write_json_atomic(tmp_path / "m.json", {"a": 2})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
