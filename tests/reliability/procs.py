"""Helpers for tests that run ``tsuchi worker`` processes."""

from __future__ import annotations

import time
from pathlib import Path


def wait_until_started(log: Path, timeout: float = 60.0) -> None:
    """Wait for a worker's "started" log line: SIGTERM is a clean stop once the
    worker is running (before that, the interpreter may still be importing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and " started" in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"worker did not start within {timeout:.0f} s: {log.read_text()[-2000:]}")
