"""Write outputs so that a crash, an error or a cancel never leaves half of them behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    suffix = "".join(path.suffixes)  # keeps ".nii.gz" so writers pick the right format
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.partial-", suffix=suffix)
    os.close(handle)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; the output follows the umask
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it is renamed to ``path`` only on success.

    An existing ``path`` must be empty, unless ``replace``: then the old folder is moved aside and
    removed only once the new one is in place.
    """
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
        if path.exists() and replace:
            os.replace(path, old)
        elif path.exists():
            path.rmdir()  # only an empty folder may be replaced
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> None:
    with atomic_file(path) as tmp:
        write(tmp)
