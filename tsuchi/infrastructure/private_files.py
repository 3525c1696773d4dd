"""Files that hold personal data or audit evidence, written owner-only.

Subject access reports, consent registers and delivery reports leave the
database as files; this module is the one way tsuchi writes such a file.
It is hand-written because the rules are POSIX ``open`` flags, not a
library's business: the file is created with mode 0600 (never widened by the
umask), a symbolic link at the path is refused rather than followed
(``O_NOFOLLOW``: an attacker's link cannot redirect the export), anything but
a regular file is refused, and an existing file whose permissions are wider
than 0600 is refused instead of being filled with personal data that others
can read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import TextIO

from tsuchi.errors import InvalidInput

_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def open_private(path: Path, field: str = "out") -> TextIO:
    """Open ``path`` for writing (truncated) as an owner-only file."""
    try:
        fd = os.open(path, _FLAGS, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InvalidInput(field, "must not be a symbolic link") from None
        if e.errno == errno.ENOENT:
            raise InvalidInput(field, "its directory must exist") from None
        if e.errno == errno.EISDIR:
            raise InvalidInput(field, "must be a file, not a directory") from None
        reason = errno.errorcode.get(e.errno or 0, "error")
        raise InvalidInput(field, f"cannot be written ({reason})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInput(field, "must be a regular file")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InvalidInput(
                field, "exists with permissions wider than 0600; remove it or chmod 600 it"
            )
        os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "w", encoding="utf-8", newline="")


def write_private(path: Path, text: str, field: str = "out") -> None:
    """Write ``text`` (UTF-8) to ``path`` as an owner-only file."""
    with open_private(path, field) as f:
        f.write(text)


__all__ = ["open_private", "write_private"]
