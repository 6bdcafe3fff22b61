"""``ldct-denoise``'s entry point: Ctrl-C and SIGTERM are answered from the first instant.

Importing the command line pulls in torch, SimpleITK and pydicom, which takes seconds; a signal in
that window would otherwise end in a traceback (SIGINT) or a silent exit (SIGTERM).
"""

from __future__ import annotations

import sys

from .signals import signals_answered


def main(argv: list[str] | None = None) -> int:
    def start() -> int:
        from . import cli

        return cli.main(argv)

    return signals_answered(start)


if __name__ == "__main__":
    sys.exit(main())
