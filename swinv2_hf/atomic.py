"""Outputs written whole or not at all, that never replace what swinv2_hf did not write nor what a command reads.

`atomic_directory` and `atomic_file` hand out a temporary sibling of the output (`.<name>.<random>.partial`) and move
it into place only when the block completes. Every folder written this way carries `MARKER`, and an existing folder is
replaced (with `overwrite`) only when it carries one: a folder of the user's is never deleted. An output that is or
holds one of the command's inputs is refused whatever the flags (`convert --checkpoint dir/model.pth --output-dir dir
--overwrite` once deleted its own checkpoint).

Replacing a folder exchanges the two in one step on Linux (`renameat2(RENAME_EXCHANGE)`), so that `path` is the old or
the new folder at every instant; elsewhere (another OS, an old libc, a file system without the flag) the old one is
renamed to `.<name>.<random>.old` and the new one renamed in. A process killed at any point (SIGKILL, power loss)
leaves at most leftovers of these two patterns, which the next call for the same path clears (`prepare_output`;
`clear_leftovers` for every output of a folder): a marked `.old` folder goes back to `path` when `path` is missing
(the fallback was cut between its renames), everything else of ours is deleted. Folders are deleted with their marker
last, so that a kill during the deletion still leaves one the next call recognises. Two processes writing the same
output at the same time are not supported.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .version import __version__

logger = logging.getLogger(__name__)

MARKER = ".swinv2_hf_output.json"  # in every folder written here; loaders ignore it, push_folder leaves it out
PARTIAL, RETIRED = ".partial", ".old"
_RANDOM = "[a-z0-9_]{8}"  # tempfile's random part of mkdtemp/mkstemp names
_AT_FDCWD = -100  # renameat2: paths relative to the working directory
_RENAME_EXCHANGE = 2
_EXCHANGE_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS)  # the file system (EINVAL) or the kernel (ENOSYS) lacks it


def prepare_output(
    path: str | os.PathLike,
    overwrite: bool,
    inputs: Sequence[str | os.PathLike] = (),
    overwrite_flag: str = "--overwrite",
) -> None:
    """Clear what interrupted writes to `path` left beside it, then refuse an output that must not be written.

    Commands call it before any work, so that a refusal costs nothing; `atomic_directory` and `atomic_file` call it
    again when they start.

    Args:
        inputs: Local paths the command reads (checkpoints, data folders, a model folder); `path` may not be or
            contain any of them, even with `overwrite`. Leave out names that are not paths (Hub ids, presets).
        overwrite_flag: The option that sets `overwrite`, named in the refusal.

    Raises:
        FileExistsError: `path` is or contains one of `inputs`, exists without `overwrite`, or is a folder that
            swinv2_hf did not write (no `MARKER`).
    """
    path = Path(path)
    _clear_leftovers(path)
    for source in inputs:
        if _is_within(source, path):
            raise FileExistsError(
                f"{path} is or contains {source}, an input of this command: choose another output "
                f"path (inputs are never replaced, not even with {overwrite_flag})."
            )
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise FileExistsError(f"{path} exists; pass {overwrite_flag} to replace it, or choose another output path.")
    if path.is_dir() and not (path / MARKER).is_file():
        raise FileExistsError(
            f"{path} was not written by swinv2_hf (it has no {MARKER}), so {overwrite_flag} does "
            "not replace it: move or delete it yourself, or choose another output path."
        )


@contextmanager
def atomic_directory(
    path: str | os.PathLike,
    overwrite: bool,
    inputs: Sequence[str | os.PathLike] = (),
    overwrite_flag: str = "--overwrite",
) -> Iterator[Path]:
    """A marked temporary sibling of `path` to write into, moved to `path` only when the block completes: nothing is
    left behind on failure, and an existing `path` is replaced only as `prepare_output` allows."""
    path = Path(path)
    prepare_output(path, overwrite, inputs, overwrite_flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=PARTIAL, dir=path.parent))
    _give_default_mode(temporary)
    _write_marker(temporary)
    try:
        yield temporary
        _replace_directory(temporary, path)
    finally:
        if os.path.lexists(temporary):
            _delete(temporary)


@contextmanager
def atomic_file(
    path: str | os.PathLike,
    overwrite: bool,
    inputs: Sequence[str | os.PathLike] = (),
    overwrite_flag: str = "--overwrite",
) -> Iterator[Path]:
    """`atomic_directory` for a single file, which `os.replace` swaps in one step. A file has no room for a marker:
    with `overwrite`, any file at `path` is replaced (not one of `inputs`)."""
    path = Path(path)
    prepare_output(path, overwrite, inputs, overwrite_flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    _give_default_mode(temporary)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _is_within(inner: str | os.PathLike, outer: Path) -> bool:
    """Whether `inner` is `outer` or lies inside it, links resolved (the paths need not exist)."""
    inner, outer = Path(os.path.realpath(inner)), Path(os.path.realpath(outer))
    return inner == outer or outer in inner.parents


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _give_default_mode(path: Path) -> None:
    """tempfile makes private (0700/0600) paths; the output gets the mode a plain mkdir or open would give it."""
    path.chmod((0o777 if path.is_dir() else 0o666) & ~_umask())


def _write_marker(folder: Path) -> None:
    """What wrote the folder: its marker makes it replaceable with `overwrite`, and its leftovers removable."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    writer = {"written_by": "swinv2_hf", "version": __version__, "program": program}
    (folder / MARKER).write_text(json.dumps(writer, indent=2) + "\n")


def _delete(path: Path) -> None:
    """Delete an output of ours: a folder's marker goes last, so that a kill midway leaves a folder still marked."""
    if not path.is_dir() or path.is_symlink():
        path.unlink()
        return
    for entry in path.iterdir():
        if entry.name == MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    shutil.rmtree(path)


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's renameat2, or None where there is none (another OS, glibc before 2.28)."""
    if sys.platform != "linux":
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step; False where the system cannot, so that the caller renames twice."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _EXCHANGE_UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def _replace_directory(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Move the finished folder `source` to `destination` (a sibling) and delete what was there: exchanged in one
    step where the system can, so that `destination` is the old or the new folder at every instant; otherwise the old
    one is first renamed to `source`'s name with the suffix `.old`. Nothing is checked: callers decide what may be
    replaced (`prepare_output`)."""
    source, destination = Path(source), Path(destination)
    if not os.path.lexists(destination):
        os.replace(source, destination)
        return
    if _exchange(source, destination):
        _delete(source)  # now the old folder
        return
    retired = source.with_suffix(RETIRED)
    os.replace(destination, retired)
    os.replace(source, destination)  # killed before this: no `destination` (atomic_directory's next call fixes it)
    _delete(retired)


def clear_leftovers(folder: str | os.PathLike) -> None:
    """`_clear_leftovers` for every output in `folder` that left something (a run resumed after a kill clears its
    checkpoint folder this way: it does not know which step was being written)."""
    folder = Path(folder)
    pattern = re.compile(rf"\.(.+)\.{_RANDOM}({re.escape(PARTIAL)}|{re.escape(RETIRED)})")
    names = {match[1] for entry in folder.iterdir() if (match := pattern.fullmatch(entry.name))}
    for name in sorted(names):
        _clear_leftovers(folder / name)


def _clear_leftovers(path: Path) -> None:
    """Delete what interrupted writes to `path` left beside it (marked folders and temporary files of our name
    pattern), and move a marked `.old` folder back to `path` when `path` is missing. Nothing else is touched."""
    if not path.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{_RANDOM}({re.escape(PARTIAL)}|{re.escape(RETIRED)})")
    for leftover in path.parent.iterdir():
        match = pattern.fullmatch(leftover.name)
        if match is None or leftover.is_symlink():
            continue
        marked = (leftover / MARKER).is_file()
        temporary_file = match[1] == PARTIAL and leftover.is_file()
        try:
            if marked and match[1] == RETIRED and not os.path.lexists(path):
                os.rename(leftover, path)
                logger.warning(f"Moved {leftover} back to {path}: an earlier replacement of it was interrupted.")
            elif marked or temporary_file:
                _delete(leftover)
                logger.warning(f"Removed {leftover}, left by an interrupted write of {path}.")
        except FileNotFoundError:  # another process of the same run (a distributed rank) cleared it first
            continue
