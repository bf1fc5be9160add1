"""Where output bytes go: the one rule every file calm-mail writes for a user follows.

`write_output` writes through a callback, by what is at the path:

- ``-``: standard output, straight through.
- a device, a FIFO (``/dev/null``, ``>(gzip > plan.gz)``): opened and written straight through,
  never replaced, so ``/dev/null`` stays a device and a pipe's reader gets the bytes.
- a directory: refused (`OutputError`, exit 2), nothing written.
- a regular file, or nothing yet: written to a temporary file beside it, then renamed over it,
  so a reader (or a crash) sees the old bytes or the new ones, never half. A new file gets the
  mode ``open()`` would give it (0o666 less the umask); a replaced file keeps its mode (and its
  owner, when the process may set it). A symbolic link is followed: its target is replaced.

Any failure to write (no such folder that can be made, permission, a full disk, a name too
long) is an `OutputError` naming the path; an interrupted write leaves the old file as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from calm_mail.errors import UsageError

STDOUT = "-"
Writer = Callable[[BinaryIO], None]


class OutputError(UsageError):
    """An output path cannot be written: a directory, a folder without permission, a full disk.
    `path` is the path as given."""

    def __init__(self, message: str, *, path: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


def write_output(path: Path | str, write: Writer) -> None:
    """Write what `write` writes to its binary stream to `path`, by the rule of this module."""
    name = os.fspath(path)
    if name == STDOUT:
        _to_stdout(write)
        return
    _check_name(name)
    try:
        st = os.stat(name)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _error(exc, name) from exc
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputError("is a directory; give a file name", path=name)
    if st is not None and not stat.S_ISREG(st.st_mode):
        _straight(name, write)
        return
    _atomic(name, write, st)


def _check_name(name: str) -> None:
    """What the system cannot take as a file name at all (the OS refuses the rest itself)."""
    if "\0" in name:
        raise OutputError("a file name cannot hold a NUL character", path=repr(name))
    try:
        os.fsencode(name)
    except UnicodeEncodeError as exc:
        raise OutputError("not a file name this system can encode", path=repr(name)) from exc


def write_bytes(path: Path | str, data: bytes) -> None:
    """`write_output` of bytes already in memory."""

    def write(stream: BinaryIO) -> None:
        stream.write(data)

    write_output(path, write)


def write_text(path: Path | str, text: str) -> None:
    """`write_output` of text, encoded as UTF-8 with its newlines as they are."""
    write_bytes(path, text.encode("utf-8"))


def _to_stdout(write: Writer) -> None:
    stream = sys.stdout.buffer
    try:
        write(stream)
        stream.flush()
    except OSError as exc:
        raise _error(exc, "standard output") from exc


def _straight(name: str, write: Writer) -> None:
    """A device or a FIFO: open it as it is (no truncation of anything, no rename)."""
    try:
        with open(name, "wb") as stream:
            write(stream)
    except OSError as exc:
        raise _error(exc, name) from exc


def _atomic(name: str, write: Writer, st: os.stat_result | None) -> None:
    target = os.path.realpath(name) if st is not None else os.path.abspath(name)
    folder = os.path.dirname(target)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = _create_temp(folder, os.path.basename(target))
        with os.fdopen(fd, "wb") as stream:
            if st is not None:
                _keep_mode_and_owner(stream.fileno(), st)
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise _error(exc, name) from exc
    finally:
        if tmp is not None:
            _unlink_quietly(tmp)


def _create_temp(folder: str, base: str) -> tuple[int, str]:
    """A new file beside the target, created as ``open()`` creates one (0o666 less the umask,
    applied by the kernel). Its name stays short whatever the target's length."""
    for _ in range(100):
        tmp = os.path.join(folder, f".{base[:40]}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


def _keep_mode_and_owner(fd: int, st: os.stat_result) -> None:
    if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
        # only root may give a file away; otherwise the file is then the writer's own
        with contextlib.suppress(PermissionError):
            os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))  # after chown, which clears set-id bits


def _unlink_quietly(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _error(exc: OSError, name: str) -> OutputError:
    reason = exc.strerror or type(exc).__name__
    return OutputError(f"cannot write: {reason}", path=name)
