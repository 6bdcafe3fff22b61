"""Denoising in a real child Python process: result, progress, cancel and failure leave no trace."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import rotated_direction, small_volume
from LDCTDenoiseLib.engine.inference import EngineOptions, VolumeDenoiser
from LDCTDenoiseLib.errors import Cancelled, LDCTError
from LDCTDenoiseLib.io import Volume
from LDCTDenoiseLib.models.weights import load_model
from LDCTDenoiseLib.slicer.process import CANCELLED, DONE, FAILED, RUNNING, BackgroundDenoise


def test_child_process_denoises_like_the_engine_and_keeps_geometry(tiny_model_dir):
    volume = small_volume(direction=rotated_direction(25.0))
    run = BackgroundDenoise(volume, weights=str(tiny_model_dir), options=EngineOptions(device="cpu"))
    seen = []
    result = run.wait(progress=lambda done, total: seen.append((done, total)))
    assert run.state == DONE and not run.folder.exists()
    expected = VolumeDenoiser(load_model(tiny_model_dir), EngineOptions(device="cpu"))(volume.array)
    np.testing.assert_allclose(result.array, expected, atol=1e-4)
    np.testing.assert_allclose(result.direction, volume.direction, atol=1e-9)
    np.testing.assert_allclose(result.origin, volume.origin, atol=1e-6)
    assert run.fraction == 1.0 and seen[-1] == (volume.array.shape[0], volume.array.shape[0])
    assert '"device": "cpu"' in run.summary


def test_cancel_kills_the_child_and_leaves_nothing(tiny_model_dir):
    run = BackgroundDenoise(small_volume(), weights=str(tiny_model_dir), options=EngineOptions(device="cpu"))
    run.cancel()  # the child is still importing torch
    assert run.state == CANCELLED and run.process.returncode is not None and not run.folder.exists()
    assert run.poll() == CANCELLED
    with pytest.raises(Cancelled):
        run.result()


def test_a_failing_child_reports_its_reason(tmp_path):
    run = BackgroundDenoise(small_volume(), weights=str(tmp_path / "no-model"), options=EngineOptions(device="cpu"))
    with pytest.raises(LDCTError, match="no model manifest"):
        run.wait()
    assert run.state == FAILED and not run.folder.exists()


LAUNCHER = """#!{python}
# A stand-in for CTK's PythonSlicer launcher: it starts the real Python as a child process (no exec)
# and waits for it, so killing this process alone would leave the child running.
import subprocess, sys
sys.exit(subprocess.call([{python!r}, *sys.argv[1:]]))
"""


def _processes_mentioning(text: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line contains ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads the process table from Linux /proc")
def test_cancel_stops_the_whole_process_tree_of_a_launcher_that_starts_python_as_a_child(tmp_path):
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(LAUNCHER.format(python=sys.executable))
    launcher.chmod(0o755)
    slow = Volume(np.zeros((40, 256, 256), np.float32), spacing=(0.7, 0.7, 2.5))  # the bundled model: seconds
    run = BackgroundDenoise(slow, python=str(launcher), options=EngineOptions(device="cpu"))
    deadline = time.monotonic() + 120
    while run.done == 0 and run.poll() == RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run.state == RUNNING and run.done >= 1, run.log
    assert len(_processes_mentioning(str(run.folder))) == 2  # the launcher and the real Python under it
    run.cancel()
    time.sleep(0.5)
    assert _processes_mentioning(str(run.folder)) == [] and run.state == CANCELLED and not run.folder.exists()


def test_the_childs_own_lines_are_kept_for_the_log_pane(tiny_model_dir):
    run = BackgroundDenoise(small_volume(), weights=str(tiny_model_dir),
                            options=EngineOptions(device="cpu", strength=0.3))
    run.wait()
    assert run.log[0] == "Model tiny on cpu (float32), strength 30 %, keep 0 HU of noise, 6 slices of 48 x 40"
    mirrored = BackgroundDenoise(small_volume(), weights=str(tiny_model_dir),
                                 options=EngineOptions(device="cpu", self_ensemble=2))
    mirrored.wait()
    assert mirrored.log[0].endswith("keep 0 HU of noise, 2 views averaged, 6 slices of 48 x 40")
    assert not any(line.startswith(("PROGRESS", "DONE")) for line in run.log)


NOISY_LAUNCHER = """#!{python}
# A stand-in launcher (named as such) that writes bytes no encoding decodes before starting the worker,
# as a Windows console code page or a library's stray output can.
import subprocess, sys
sys.stdout.buffer.write(b"\\xff\\xfe launcher says \\x81\\n"); sys.stdout.flush()
sys.stderr.buffer.write(b"\\xc3\\x28 warning\\n"); sys.stderr.flush()
sys.exit(subprocess.call([{python!r}, *sys.argv[1:]]))
"""


def test_undecodable_bytes_from_the_child_are_replaced_and_the_run_still_finishes(tmp_path, tiny_model_dir):
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(NOISY_LAUNCHER.format(python=sys.executable))
    launcher.chmod(0o755)
    run = BackgroundDenoise(small_volume(), weights=str(tiny_model_dir), python=str(launcher),
                            options=EngineOptions(device="cpu"))
    result = run.wait()
    assert run.state == DONE and run.done == run.total and result.array.shape == small_volume().array.shape
    assert any("\ufffd" in line and "launcher says" in line for line in run.log)
