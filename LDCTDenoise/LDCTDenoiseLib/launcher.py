"""``ldct-denoise``'s entry point: Ctrl-C and SIGTERM are answered from the first instant.

Importing the command line pulls in torch, SimpleITK and pydicom, which takes seconds; a signal in
that window would otherwise end in a traceback (SIGINT) or a silent exit (SIGTERM).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from .errors import Terminated, raise_terminated

CANCELLED = "ldct-denoise: cancelled; nothing was written"
TERMINATED = "ldct-denoise: terminated (SIGTERM); nothing was written"


def main(argv: list[str] | None = None) -> int:
    def start() -> int:
        from . import cli

        return cli.main(argv)

    return signals_answered(start)


def signals_answered(body: Callable[[], int]) -> int:
    """``body()``'s exit code; Ctrl-C and SIGTERM end it with one line and exit 130 / 143.

    Both unwind as exceptions, so every atomic writer on the way removes its partial output.
    """
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        return body()
    except KeyboardInterrupt:
        print(CANCELLED, file=sys.stderr)
        return 130
    except Terminated:
        print(TERMINATED, file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
