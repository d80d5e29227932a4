"""Atomic writes: the final name holds either the old file or the complete new one, never a partial one."""

import pytest

from mv4d_core.utils.atomic_write import atomic_open, write_bytes_atomic


def test_write_bytes_atomic_creates_folders_and_replaces_the_file(tmp_path):
    path = tmp_path / "a" / "b" / "x.bin"
    assert write_bytes_atomic(path, b"first") == path
    write_bytes_atomic(str(path), b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.bin"], "no temp file is left behind"


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_error_mid_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path, error):
    path = tmp_path / "x.bin"
    path.write_bytes(b"old")
    with pytest.raises(error):
        with atomic_open(path) as f:
            f.write(b"partial new content")
            raise error("interrupted")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_an_error_before_the_first_write_leaves_no_file(tmp_path):
    path = tmp_path / "never.bin"
    with pytest.raises(ValueError):
        with atomic_open(path):
            raise ValueError("no data")
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = write_bytes_atomic(tmp_path / "w.bin", b"x")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
