"""Atomic writes: every file icezoo writes goes to a temporary name next to its target and is
renamed into place, so a failure (bad input, disk full, Ctrl-C) never leaves a half-written file.

Targets: a regular file is replaced; a missing one is created. A target that exists and is not a
regular file (a device such as /dev/full, a FIFO, a socket, a directory) is refused: renaming over
it would silently turn it into a regular file. A symbolic link is followed: the file it points to
is replaced atomically (its temporary sits beside that file) and the link itself stays, so a
``submission.csv -> runs/x/submission.csv`` link keeps working; a link to a non-regular file is
refused like the file itself. An OS error (read-only filesystem, disk full, permission) becomes
one IcezooError naming the path and the OS reason.

A directory (a dataset) is built the same way: under a temporary name beside its target, renamed
into place when complete (``atomic_directory``).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from icezoo.core.errors import IcezooError


class WriteError(IcezooError, OSError):
    """A write the OS refused: one line for the CLI (an IcezooError) that is still an OSError, whose
    ``errno`` says why (``errno.ENOSPC``: the disk is full)."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


def os_reason(exc: BaseException) -> str:
    """The OS's own words for an error (``No space left on device``), without Python's decoration."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def os_error_line(exc: OSError) -> str:
    """``PATH: reason`` of an OSError (``PATH -> OTHER`` for a rename), else its reason alone."""
    where = exc.filename
    if where is not None and exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    return f"{where}: {os_reason(exc)}" if where is not None else os_reason(exc)


def writable_target(path: str | Path) -> Path:
    """The file a write to ``path`` replaces: ``path`` itself, or the file its symlink names.
    Refuses (IcezooError) a target that exists and is not a regular file."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        return target
    except OSError as exc:
        raise IcezooError(f"{path}: cannot write ({os_reason(exc)})") from None
    if stat.S_ISDIR(mode):
        raise IcezooError(f"{path}: is a directory (give a file name)")
    if not stat.S_ISREG(mode):
        kind = ("a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
                else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        via = f" (via the link to {target})" if target != path else ""
        raise IcezooError(f"{path}: is {kind}{via}; icezoo writes regular files only")
    return target


def _kind(mode: int) -> str:
    return ("a directory" if stat.S_ISDIR(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def readable_file(path: str | Path) -> Path:
    """``path`` when it is a regular file (or a link to one) or missing (the reader says so); an
    IcezooError for a device, FIFO, socket or directory: reading ``/dev/zero`` whole never ends
    (issue 27, C10)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return path
    if not stat.S_ISREG(mode):
        raise IcezooError(f"{path}: is {_kind(mode)}; icezoo reads regular files only")
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``'s target; rename it into place on success, remove it
    on failure. OS errors are one IcezooError naming ``path``."""
    path = Path(path)
    target = writable_target(path)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            os.replace(tmp, target)
        except OSError as exc:
            raise WriteError(f"{path}: cannot write ({os_reason(exc)})", exc.errno) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def atomic_directory(path: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield a new empty directory beside ``path`` to build in; on success rename it to ``path``
    (mode 0755), on failure remove it, so a reader never sees a half-built directory.

    ``path`` may be missing or an empty directory. With ``replace`` an existing ``path`` is moved
    aside first and removed after the rename (the caller decides what it may replace). Otherwise a
    ``path`` that is not empty by then (a concurrent builder finished first) makes the rename fail
    with the OSError; the temporary directory is removed either way."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if replace and path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.rename(path, old)
            os.rename(tmp, path)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
