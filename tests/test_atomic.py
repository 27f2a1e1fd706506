"""qualmet.atomic: complete files or none, with the permissions a plain open() would give."""
from __future__ import annotations

import stat

import pytest

from qualmet.atomic import atomic_path, write_json, write_text


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_file_gets_umask_mode_not_mkstemp_0600(tmp_path, monkeypatch, umask):
    import qualmet.atomic as atomic

    monkeypatch.setattr(atomic, "_UMASK", umask)  # the process umask, as read at import
    f = write_text(tmp_path / "report.html", "<p>hi</p>")
    assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask  # 0644 under the usual umask: others can read it


def test_failed_write_leaves_neither_target_nor_temp(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        write_json(target, {"x": float("nan")})  # JSON has no NaN: refused, nothing written
    assert list(tmp_path.iterdir()) == []
