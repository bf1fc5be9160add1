"""Where output bytes go (`calm_mail.inputs.writes`, `plan --out`): a regular file is replaced
atomically with the mode a user expects, a device or pipe is written straight through, ``-`` is
stdout, a directory or an unwritable place is one clear message with exit 2."""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_mail.demo.data import generate
from calm_mail.inputs.writes import OutputError, write_bytes, write_output
from tests.test_cli import EDITION, invoke, make_root, mistake, ok

# ----------------------------------------------------------------------------- the helper


@pytest.fixture
def umask() -> Iterator[int]:
    """A known umask for the test (and the previous one back afterwards)."""
    old = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_new_file_gets_the_mode_open_gives(tmp_path: Path, umask: int) -> None:
    write_bytes(tmp_path / "new.jsonl", b"x\n")
    with open(tmp_path / "by-open", "wb"):
        pass
    assert _mode(tmp_path / "new.jsonl") == 0o666 & ~umask == _mode(tmp_path / "by-open")


def test_a_new_file_in_a_new_folder(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "plan.jsonl"
    write_bytes(target, b"x\n")
    assert target.read_bytes() == b"x\n"


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604, 0o444])
def test_a_replaced_file_keeps_its_mode(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "plan.jsonl"
    target.write_bytes(b"old\n")
    target.chmod(mode)
    write_bytes(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert _mode(target) == mode
    assert _leftovers(tmp_path) == []


def test_a_symlink_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    real.write_bytes(b"old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    write_bytes(link, b"new\n")
    assert link.is_symlink() and real.read_bytes() == b"new\n"


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a directory") as caught:
        write_bytes(tmp_path, b"x")
    assert caught.value.exit_code == 2 and caught.value.path == str(tmp_path)


def test_a_fifo_gets_the_bytes(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = _read_in_thread(fifo)
    write_bytes(fifo, b"through the pipe\n")
    assert got() == b"through the pipe\n"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_character_device_stays_one(tmp_path: Path) -> None:
    node = _null_device(tmp_path)
    write_bytes(node, b"gone\n")
    assert stat.S_ISCHR(os.stat(node).st_mode)


def test_dev_null_stays_a_character_device() -> None:
    write_bytes(os.devnull, b"gone\n")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_dash_is_stdout(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    write_bytes("-", b"to stdout\n")
    assert capfdbinary.readouterr().out == b"to stdout\n"


def test_an_interrupted_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "plan.jsonl"
    target.write_bytes(b"old\n")

    def half(stream: BinaryIO) -> None:
        stream.write(b"half of the new")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_output(target, half)

    def disk_full(stream: BinaryIO) -> None:
        stream.write(b"half of the new")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OutputError, match="No space left"):
        write_output(target, disk_full)
    assert target.read_bytes() == b"old\n"
    assert _leftovers(tmp_path) == []


def test_an_unwritable_folder_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(OutputError, match="cannot write") as caught:
        write_bytes(tmp_path / "a-file" / "plan.jsonl", b"x")
    assert caught.value.exit_code == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_folder_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "plan.jsonl"
    target.write_bytes(b"old\n")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            write_bytes(target, b"new\n")
    finally:
        tmp_path.chmod(0o700)
    assert target.read_bytes() == b"old\n"


def test_the_longest_name_is_written(tmp_path: Path) -> None:
    target = tmp_path / ("p" * 255)  # the temporary name beside it must stay short too
    write_bytes(target, b"x\n")
    assert target.read_bytes() == b"x\n"


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=300).filter(lambda n: "/" not in n))
def test_any_name_is_written_or_refused_clearly(tmp_path: Path, name: str) -> None:
    """Long names, NUL characters, odd code points: written, or an `OutputError`."""
    try:
        write_bytes(tmp_path / "fuzz" / name, b"x\n")
    except OutputError as exc:
        assert exc.exit_code == 2
    else:
        assert (tmp_path / "fuzz" / name).read_bytes() == b"x\n"


def _read_in_thread(path: Path) -> Callable[[], bytes]:
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(path.read_bytes()), daemon=True)
    reader.start()

    def result() -> bytes:
        reader.join(10)
        return got[0]

    return result


def _null_device(tmp_path: Path) -> Path:
    """A private /dev/null (same major and minor), so a broken writer cannot harm the real one."""
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    return node


# ----------------------------------------------------------------------------- plan --out


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("writes-data") / "demo"
    generate(data, users=120, seed=3, edition=EDITION)
    return data


@pytest.fixture
def root(tmp_path: Path, demo_data: Path) -> Path:
    return make_root(tmp_path, demo_data)


def _plan(root: Path, out: str) -> Result:
    return invoke(root, "plan", "weekly_winddown", "--edition", EDITION, "--out", out)


def test_plan_out_a_device_stays_a_device(root: Path, tmp_path: Path) -> None:
    node = _null_device(tmp_path)
    ok(_plan(root, str(node)))
    assert stat.S_ISCHR(os.stat(node).st_mode)


def test_plan_out_dev_null(root: Path) -> None:
    ok(_plan(root, os.devnull))
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_plan_out_a_fifo_and_a_file_and_stdout_get_the_same_bytes(
    root: Path, tmp_path: Path
) -> None:
    ok(_plan(root, str(tmp_path / "plan.jsonl")))
    expected = (tmp_path / "plan.jsonl").read_bytes()
    assert expected.count(b"\n") > 100
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = _read_in_thread(fifo)
    ok(_plan(root, str(fifo)))
    assert got() == expected
    dashed = _plan(root, "-")
    ok(dashed)
    assert dashed.stdout_bytes == expected
    assert "users" in dashed.stderr  # the summary went aside


def test_plan_out_keeps_the_mode(root: Path, tmp_path: Path, umask: int) -> None:
    new = tmp_path / "new.jsonl"
    ok(_plan(root, str(new)))
    assert _mode(new) == 0o666 & ~umask
    old = tmp_path / "old.jsonl"
    old.write_bytes(b"old\n")
    old.chmod(0o644)
    ok(_plan(root, str(old)))
    assert _mode(old) == 0o644 and old.read_bytes() != b"old\n"


def test_plan_out_a_directory_is_refused(root: Path, tmp_path: Path) -> None:
    message = mistake(_plan(root, str(tmp_path)))
    assert "directory" in message


def test_plan_out_under_a_file_is_refused(root: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    message = mistake(_plan(root, str(tmp_path / "a-file" / "plan.jsonl")))
    assert "a-file/plan.jsonl" in message and "cannot write" in message
