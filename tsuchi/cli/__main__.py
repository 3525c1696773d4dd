"""``python -m tsuchi.cli``: the same command line as the ``tsuchi`` script.

Why this module exists: the tests and the reliability harness start the CLI
with the interpreter they run under (``sys.executable -m tsuchi.cli``) rather
than relying on the installed script being on ``PATH``.
"""

from __future__ import annotations

from tsuchi.cli import main

if __name__ == "__main__":
    main()
