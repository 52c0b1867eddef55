"""Writing outputs so that a failure or a kill never leaves a half-written file.

Everything the toolkit writes (``infer --output``, bench and evaluate JSON
and plots, bundles, engine directories) is written beside its destination
under a hidden name carrying the writer's pid, then renamed into place (an
atomic ``os.replace`` on one filesystem). ``check_writable`` runs before any
long job, so a bad output path costs a one-line error, not the whole run.
A directory staged by a process that was killed (SIGKILL runs no cleanup)
is recognised by its dead pid and removed by the next writer in that folder.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import BundleError, InputError, param

#: ``.NAME.partial-PID-<8 hex digits>`` (a staged directory), ``.NAME.old-PID`` (a replaced one)
_STAGED = re.compile(r"^\..+\.(?:partial|old)-(\d+)(?:-.*)?$")


def check_writable(path: str | Path, what: str = "output") -> Path:
    """Refuse, before any work, an output path that cannot be written as a file."""
    path = Path(path)
    parent = path.parent
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory: give a file path")
    if not parent.is_dir():
        raise InputError(f"{what} {path}: folder {parent} does not exist: create it first")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"{what} {path}: not writable here (permissions)")
    return path


@contextmanager
def atomic_file(path: str | Path, what: str = "output") -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path`` (same suffix, so writers that infer the
    format from it work); on success it replaces ``path``, on any error it is removed."""
    path = check_writable(path, what)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise InputError(f"{what} {path}: cannot write it ({e.strerror or type(e).__name__})") from None
    finally:
        tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale(parent: Path) -> list[Path]:
    """Remove the staged directories in ``parent`` whose writing process is gone; return them."""
    removed = []
    for entry in parent.iterdir() if parent.is_dir() else ():
        found = _STAGED.match(entry.name)
        if found and entry.is_dir() and not entry.is_symlink() and not _alive(int(found.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


@contextmanager
def staged_directory(
    final: str | Path, overwrite: bool = False, *, ours: Callable[[Path], bool], what: str
) -> Iterator[Path]:
    """Yield a hidden staging dir beside ``final``; rename it into place on success.

    On any error (or Ctrl-C) the staging dir is removed and ``final`` is left
    as it was; one left by a killed process is removed by the next call here.
    ``overwrite`` replaces only an empty directory or one that ``ours`` says we
    wrote (``what``: "a bundle", ...): never a user's unrelated folder.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise BundleError(f"{final} is a file: give a directory path")
    if final.exists() and not overwrite:
        raise BundleError(f"{final} already exists: pass {param('overwrite', python='overwrite=True')} or choose another {param('out')}")
    if final.exists() and any(final.iterdir()) and not ours(final):
        raise BundleError(f"{final} exists and is not {what}: {param('overwrite', python='overwrite=True')} replaces only {what}; choose another {param('out')}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(final.parent)
        # mkdir, not mkdtemp: the result gets the user's umask (mkdtemp's 0700 would hide it from others)
        stage = final.parent / f".{final.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        stage.mkdir()
    except OSError as e:
        raise BundleError(f"cannot write {final}: {e.strerror or type(e).__name__} ({e.filename}): choose another {param('out')}") from None
    try:
        yield stage
        try:
            if final.exists():
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                os.replace(final, old)
                os.replace(stage, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(stage, final)
        except OSError as e:
            raise BundleError(f"cannot replace {final}: {e.strerror or type(e).__name__}: it is left as it was") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
