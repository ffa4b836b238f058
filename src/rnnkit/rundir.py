"""One training run into a model directory ``OUT``: locked, staged, published in one rename.

Layout while a run is alive (all beside ``OUT``, in its parent directory)::

    .OUT.lock          flock'ed by the live run: a second run into OUT exits 2 at once
                       (removed when the run ends; a killed run's stale file is harmless)
    .OUT.run/          the run's work area
        run.json       the run's settings (flags), checked again by --resume
        model/         the staged model directory: checkpoints and final files go here
        backup/        rnnkit.backup state after the last finished epoch (for --resume)
    OUT/               the previous run's model, untouched until the new one is complete

:meth:`TrainingRun.publish` exchanges ``model/`` and ``OUT`` in one ``renameat2(...,
RENAME_EXCHANGE)`` (Linux; elsewhere two renames), then deletes the old model and the work
area. A reader of ``OUT`` therefore sees the old run's files or the new run's, never a mix;
a kill at any moment leaves ``OUT`` as it was, and ``--resume`` continues from ``.OUT.run``.

Output paths are checked before any work: ``OUT`` must not be a file, nor a non-empty
directory that is not an rnnkit model (its files would be replaced), and its parent must be
writable.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .errors import UserError
from .io import CONFIG_FILE, atomic_write_json, read_json

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the paths ``a`` and ``b`` (both exist); False when unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def check_output_dir(out: Path) -> None:
    """UserError unless a run may write ``out`` (see the module docstring)."""
    here = Path.cwd().resolve()
    if out.resolve() in (here, *here.parents):
        raise UserError(f"--out {out} is the current directory or one above it; name a "
                        "model directory (e.g. --out models/mine)")
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise UserError(f"--out {out} exists and is not a directory")
        if any(out.iterdir()) and not (out / CONFIG_FILE).is_file():
            raise UserError(f"--out {out} is a non-empty directory that is not an rnnkit model "
                            "directory; refusing to replace its files (choose another --out)")
    _check_writable_parent(out, "--out")


def check_output_file(path: str | os.PathLike | None, flag: str) -> None:
    """UserError unless ``path`` (e.g. ``--plot``) can be written as a file."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag} {p} is a directory, not a file")
    _check_writable_parent(p, flag)


def _check_writable_parent(path: Path, flag: str) -> None:
    """UserError unless the nearest existing folder above ``path`` is a writable directory
    (the folders between are created when written)."""
    probe = path.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{flag} {path}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {probe} is not writable")


class TrainingRun:
    """Context of one training run into ``out`` (see the module docstring).

    ``settings``: JSON-safe flags of the run; ``resume=True`` continues the interrupted run
    in ``.OUT.run`` (its settings must match), ``resume=False`` refuses to start over an
    interrupted run (its work would be lost). Leaving the context without :meth:`publish`
    releases the lock and keeps the work area for ``--resume``.
    """

    def __init__(self, out: str | os.PathLike, settings: dict[str, Any], resume: bool = False
                 ) -> None:
        self.out = Path(out)
        self.settings, self.resume = settings, resume
        name = self.out.name or "model"
        self.work = self.out.parent / f".{name}.run"
        self.lock_path = self.out.parent / f".{name}.lock"
        self.stage = self.work / "model"
        self.backup_dir = self.work / "backup"
        self._lock_fd: int | None = None
        self.resumed_epochs = 0

    def __enter__(self) -> TrainingRun:
        check_output_dir(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._prepare()
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        """Release the lock. A run that failed before finishing its first epoch leaves
        nothing worth resuming: its work area is removed, so the next run starts clean."""
        try:
            if exc_type is not None and self.work.exists() and not self.resume:
                from .backup import Backup

                if not Backup(self.backup_dir).exists():
                    shutil.rmtree(self.work, ignore_errors=True)
        finally:
            self._unlock()

    def _lock(self) -> None:
        """flock ``.OUT.lock``; the file is removed again on release. After locking, the
        path must still name the locked file (else a finishing run unlinked it meanwhile,
        and the lock is taken again on the new file)."""
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UserError(f"another training run is writing {self.out} (lock "
                                f"{self.lock_path} is held); wait for it or choose another "
                                "--out") from None
            try:
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd = fd
                return
            os.close(fd)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_path)
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _prepare(self) -> None:
        run_json = self.work / "run.json"
        if self.resume:
            if not run_json.is_file():
                raise UserError(f"--resume: no interrupted run of {self.out} to resume "
                                f"({self.work} does not exist)")
            saved = read_json(run_json, "run settings")
            if not isinstance(saved, dict) or saved.get("settings") != self.settings:
                diff = _diff(saved.get("settings") if isinstance(saved, dict) else None,
                             self.settings)
                raise UserError(f"--resume: the interrupted run of {self.out} was started with "
                                f"other settings ({diff}); give the same flags")
            from .backup import Backup

            self.resumed_epochs = Backup(self.backup_dir).epochs_done()
            return
        if self.work.exists():
            raise UserError(f"{self.out} has an interrupted training run in {self.work}: pass "
                            "--resume to continue it, or delete that folder to start over")
        self.stage.mkdir(parents=True)
        atomic_write_json(run_json, {"settings": self.settings})

    def publish(self) -> None:
        """Make the staged model the content of ``out`` in one rename; remove the old one."""
        if not (self.stage / CONFIG_FILE).is_file():
            raise UserError(f"no model was saved to {self.out}")
        old = self.work / "old"
        if self.out.exists():
            if _exchange(self.stage, self.out):
                old = self.stage  # the previous model is now where the staged one was
            else:
                self.out.rename(old)
                self.stage.rename(self.out)
        else:
            self.stage.rename(self.out)
        _fsync_dir(self.out.parent)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(old)
        shutil.rmtree(self.work, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _diff(a: Any, b: dict[str, Any]) -> str:
    if not isinstance(a, dict):
        return "unreadable"
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {json.dumps(a.get(k))} then, {json.dumps(b.get(k))} now"
                     for k in keys[:3]) or "none"
