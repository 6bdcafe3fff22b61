"""Ctrl-C and SIGTERM answered with one line and an exit status, for the command line and the launcher.

Both unwind as exceptions, so every atomic writer on the way removes its partial output.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from .errors import Terminated, raise_terminated

CANCELLED = "ldct-denoise: cancelled; nothing was written"
TERMINATED = "ldct-denoise: terminated (SIGTERM); nothing was written"


def signals_answered(body: Callable[[], int]) -> int:
    """``body()``'s exit code; Ctrl-C and SIGTERM end it with one line and exit 130 / 143."""
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
