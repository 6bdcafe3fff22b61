"""Exceptions whose message tells the user what went wrong and what to do about it."""


class LDCTError(Exception):
    """Base of every error the library raises on purpose; its message is shown as is."""


class InputError(LDCTError):
    """The input (file, folder, series, array) cannot be used as given."""


class OutputError(LDCTError):
    """The output cannot be written where it was asked for."""


class WeightsError(LDCTError):
    """Model weights are missing, corrupt or do not fit the architecture."""


class NoModelError(WeightsError):
    """No model weights were found in any of the places searched."""


class Cancelled(LDCTError):
    """The user cancelled a long-running job; nothing was written."""


class Terminated(Exception):
    """SIGTERM arrived: unwinds like Ctrl-C, so every atomic writer removes its partial output."""


def raise_terminated(signum, frame) -> None:
    """A SIGTERM handler that turns the signal into ``Terminated``."""
    raise Terminated
