"""A model installed from a URL without freezing Slicer: the download runs in a thread the widget polls.

``models.download.download_model`` does the work (HTTPS, checksum before anything is opened,
resume of a cut transfer); this only moves it off the GUI thread, reports bytes, and cancels at the
next chunk: the part file stays in the cache, so installing the same URL again resumes it, and
nothing is installed.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..errors import Cancelled, LDCTError
from ..models.download import download_model
from .process import CANCELLED, DONE, FAILED, RUNNING


class ModelInstall:
    """One download-and-install in a background thread: ``state``, ``received``/``total`` bytes, ``cancel()``."""

    def __init__(self, url: str, sha256: str, name: str | None = None) -> None:
        self.state, self.error, self.folder = RUNNING, "", None
        self.received, self.total = 0, None
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, sha256, name), daemon=True)
        self._thread.start()

    @property
    def fraction(self) -> float:
        return self.received / self.total if self.total else 0.0

    def cancel(self) -> None:
        self._cancelled.set()

    def wait(self, timeout: float | None = None) -> str:
        self._thread.join(timeout)
        return self.state

    def _run(self, url: str, sha256: str, name: str | None) -> None:
        try:
            folder = download_model(url, sha256, name, self._progress)
        except Cancelled:
            self.state = CANCELLED
        except (LDCTError, OSError) as error:
            self.error, self.state = str(error).splitlines()[0], FAILED
        else:
            self.folder, self.state = Path(folder), DONE

    def _progress(self, received: int, total: int | None) -> None:
        if self._cancelled.is_set():
            raise Cancelled("download cancelled; nothing was installed (installing the same URL again resumes it)")
        self.received, self.total = received, total
