"""Denoising in a child process: start, follow progress, cancel, collect -- without a GUI.

The Slicer widget polls ``BackgroundDenoise`` from a timer; scripts call ``run()`` and wait. The
volume goes to the child as an NRRD file in a private temporary folder (geometry kept), the result
comes back the same way, and the folder is removed whatever happens, so a cancel or a failure
leaves nothing behind.

The child is the leader of its own process group (a new session on Linux and macOS, a new process
group on Windows), and cancel kills the whole group: Slicer's PythonSlicer is a launcher that starts
the real Python as *its* child, so killing the launcher alone would leave the work running. Runs
still alive when this interpreter exits (Slicer closing) are killed the same way. No console window
opens on Windows.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

from ..engine.options import EngineOptions
from ..errors import Cancelled, LDCTError
from ..io import Volume
from ..io.handoff import read_handoff, write_handoff

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"
WINDOWS = sys.platform == "win32"
_LIVE_RUNS: weakref.WeakSet = weakref.WeakSet()


class BackgroundDenoise:
    """One denoising run in a child Python (``python`` may be Slicer's PythonSlicer)."""

    def __init__(self, volume: Volume, options: EngineOptions | None = None, weights: str | None = None,
                 python: str | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="ldctdenoise-"))
        self.input, self.output = self.folder / "input.npy", self.folder / "output.npy"
        self.stage, self.done, self.total = "denoising", 0, volume.array.shape[0]
        self.state, self.error, self.summary = RUNNING, "", ""
        self.log: list[str] = []  # the child's output for the log pane, protocol lines left out
        write_handoff(volume, self.input)
        self.options = options or EngineOptions()
        command = [python or sys.executable, "-m", "LDCTDenoiseLib.slicer.worker", str(self.input), str(self.output),
                   *self.options.to_argv()]
        if weights:
            command += ["--model", str(weights)]
        # UTF-8 both ways, undecodable bytes replaced: a decode error would end a reader thread silently
        # (progress stops, and the child blocks on a full pipe); the locale's encoding is not UTF-8 everywhere
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        encoding="utf-8", errors="replace", env=_child_environment(),
                                        **_own_process_group())
        _LIVE_RUNS.add(self)
        self._stderr: list[str] = []
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    def poll(self) -> str:
        """The state now: running, done, failed or cancelled (non-blocking)."""
        if self.state == RUNNING and self.process.poll() is not None:
            for reader in self._readers:
                reader.join()
            self._finish()
        return self.state

    def wait(self, progress: Callable[[int, int], None] | None = None) -> Volume:
        """Block until the child ends; the denoised volume, or the child's reason as an error."""
        while self.poll() == RUNNING:
            try:
                self.process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
            if progress is not None:
                progress(self.done, self.total)
        return self.result()

    def cancel(self) -> None:
        """Kill the child and every process it started; nothing of the run stays on disk."""
        if self.state == RUNNING:
            kill_process_tree(self.process)
            self.state = CANCELLED
            self._cleanup()

    def result(self) -> Volume:
        if self.state == CANCELLED:
            raise Cancelled("denoising cancelled; nothing was written")
        if self.state != DONE:
            raise LDCTError(f"denoising failed: {self.error or 'the child process ended without a reason'}")
        return self._volume

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            if line.startswith("STAGE "):
                self.stage, self.done = line[6:].strip(), 0
            elif line.startswith("PROGRESS "):
                self.done, self.total = (int(v) for v in line.split()[1:3])
            elif line.startswith("DONE "):
                self.summary = line[5:].strip()
            else:
                self.log.append(line.rstrip())

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self._stderr.append(line)
            self.log.append(line.rstrip())

    def _finish(self) -> None:
        if self.state != RUNNING:
            return
        if self.process.returncode == 0 and self.output.is_file():
            self._volume = read_handoff(self.output)
            self.state = DONE
        else:
            errors = [line[6:].strip() for line in self._stderr if line.startswith("ERROR ")]
            tail = "".join(self._stderr[-3:]).strip()
            self.error = errors[-1] if errors else (tail or f"exit status {self.process.returncode}")
            self.state = FAILED
        self._cleanup()

    def _cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def kill_process_tree(process: subprocess.Popen) -> None:
    """Kill a child started with ``_own_process_group()`` and all its descendants, then reap it."""
    if WINDOWS:
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True,
                       creationflags=subprocess.CREATE_NO_WINDOW)
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the child leads its own group: pgid == pid
        except ProcessLookupError:
            pass  # the whole group has already exited
    process.kill()  # in case taskkill could not
    process.wait()


def _own_process_group() -> dict:
    if WINDOWS:
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


@atexit.register
def _cancel_live_runs() -> None:
    """Slicer is closing: no denoising child may outlive it."""
    for run in list(_LIVE_RUNS):
        run.cancel()


def _child_environment() -> dict:
    """The child imports LDCTDenoiseLib from where this process found it (a checkout or a module)."""
    library_parent = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": library_parent + (os.pathsep + path if path else ""),
            "PYTHONIOENCODING": "utf-8"}
