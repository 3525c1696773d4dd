"""The anchor log on a local file: append-only JSON lines, fsync'd, owner-only.

Why this module exists: signed checkpoints must also live somewhere the
database writer cannot rewrite (:mod:`tsuchi.projections.audit.anchor` has the
format and the rules).  This is the :class:`~tsuchi.ports.AuditAnchor` a
single host uses: a file opened with ``O_APPEND`` (mode 0600, a symbolic link
refused), each line written in one ``write`` under an exclusive ``flock`` and
``fsync``'d before :meth:`FileAuditAnchor.append` returns, so a checkpoint is
on stable storage before the export that relies on it is handed out.  In
production point ``TSUCHI_AUDIT_ANCHOR`` at append-only (WORM) storage, or
implement the port for it.

Reading is incremental: the file is scanned once per process and afterwards
only the bytes appended since, so a long log costs one pass, not one per
checkpoint.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
from pathlib import Path

from tsuchi.errors import AuditAnchorCorrupt
from tsuchi.ports import AnchoredCheckpoint
from tsuchi.projections.audit.anchor import anchor_line, anchor_path, parse_anchor_line

_FLAGS = (
    os.O_WRONLY
    | os.O_APPEND
    | os.O_CREAT
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


class FileAuditAnchor:
    """The anchor log in one local file (or ``audit-anchor.jsonl`` in a directory)."""

    def __init__(self, location: str | Path) -> None:
        self.path = anchor_path(location)
        self._lock = threading.Lock()
        self._offset = 0
        self._lines = 0
        self._latest: dict[str, AnchoredCheckpoint] = {}
        self._heads: dict[tuple[str, int], str] = {}

    @property
    def location(self) -> str:
        return str(self.path)

    # -- writing -------------------------------------------------------------------------
    def append(self, checkpoint: AnchoredCheckpoint) -> None:
        line = anchor_line(checkpoint)
        name = str(self.path)
        try:
            created = not self.path.exists()
            fd = os.open(self.path, _FLAGS, 0o600)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise AuditAnchorCorrupt(name, 0, "is a symbolic link; refused") from None
            reason = errno.errorcode.get(e.errno or 0, "error")
            raise AuditAnchorCorrupt(
                name, 0, f"cannot be opened for appending ({reason})"
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise AuditAnchorCorrupt(name, 0, "is not a regular file")
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise AuditAnchorCorrupt(name, 0, "has permissions wider than 0600")
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(fd).st_size
                if size:
                    with self.path.open("rb") as f:
                        f.seek(size - 1)
                        if f.read(1) != b"\n":
                            raise AuditAnchorCorrupt(
                                name, 0, "ends in a truncated line; repair it before appending"
                            )
                written = os.write(fd, line)
                if written != len(line):
                    raise AuditAnchorCorrupt(name, 0, "a short write; the last line is torn")
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        if created:
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    # -- reading -------------------------------------------------------------------------
    def _refresh(self) -> None:
        name = str(self.path)
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            if self._offset:
                raise AuditAnchorCorrupt(name, 0, "has disappeared") from None
            return
        except OSError as e:
            raise AuditAnchorCorrupt(name, 0, f"cannot be read ({type(e).__name__})") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size < self._offset:
                raise AuditAnchorCorrupt(name, 0, "has shrunk: lines were removed")
            f.seek(self._offset)
            for line in f:
                self._lines += 1
                cp = parse_anchor_line(name, self._lines, line)
                known = self._heads.get((cp.origin, cp.seq))
                if known is not None and known != cp.head:
                    raise AuditAnchorCorrupt(
                        name, self._lines, f"another head is already anchored at seq {cp.seq}"
                    )
                self._heads[(cp.origin, cp.seq)] = cp.head
                latest = self._latest.get(cp.origin)
                if latest is None or cp.seq > latest.seq:
                    self._latest[cp.origin] = cp
                self._offset += len(line)

    def latest(self, origin: str) -> AnchoredCheckpoint | None:
        with self._lock:
            self._refresh()
            return self._latest.get(origin)

    def origins(self) -> frozenset[str]:
        with self._lock:
            self._refresh()
            return frozenset(self._latest)


__all__ = ["FileAuditAnchor"]
