"""``python -m tsuchi``: the ``tsuchi`` command line, for hosts that run the
interpreter of their virtual environment rather than a script on ``PATH``."""

from __future__ import annotations

from tsuchi.cli import main

if __name__ == "__main__":
    main()
