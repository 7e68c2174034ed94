import pytest

from labclip.atomic import write_atomic, write_text


def test_failed_write_keeps_the_old_file(tmp_path):
    target = write_text(tmp_path / "out.csv", "old\n")
    assert target.read_text() == "old\n" and oct(target.stat().st_mode & 0o777) == "0o644"

    def broken(f):
        f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, broken)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    write_text(target, "new\n")
    assert target.read_text() == "new\n"
