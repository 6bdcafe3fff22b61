"""The hand-off between the module and its child process: raw arrays, geometry kept, nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest

from LDCTDenoiseLib.errors import InputError, OutputError
from LDCTDenoiseLib.io import Volume, handoff
from LDCTDenoiseLib.io.handoff import read_handoff, write_handoff


def _volume() -> Volume:
    rng = np.random.default_rng(0)
    direction = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    return Volume(rng.normal(0, 300, (3, 5, 7)).astype(np.float32), (0.7, 0.8, 2.5), (-10.0, 20.5, -300.0),
                  direction, metadata={"header": {"LDCTDenoise_model": "default", "LDCTDenoise_strength": 1.0}})


@pytest.mark.parametrize("mapped", [False, True])
def test_a_volume_comes_back_with_its_voxels_geometry_and_header(tmp_path, mapped):
    volume = _volume()
    path = write_handoff(volume, tmp_path / "input.npy")
    back = read_handoff(path, mapped=mapped)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.array.dtype == np.float32 and isinstance(back.array, np.memmap) == mapped
    assert back.spacing == volume.spacing and back.origin == volume.origin
    np.testing.assert_array_equal(back.direction, volume.direction)
    assert back.metadata["header"] == {"LDCTDenoise_model": "default", "LDCTDenoise_strength": "1.0"}


def test_a_failed_write_says_why_and_leaves_no_array_file(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(handoff.np, "save", full_disk)
    with pytest.raises(OutputError, match="No space left on device; is the disk full"):
        write_handoff(_volume(), tmp_path / "input.npy")
    assert [p.name for p in tmp_path.iterdir() if ".npy" in p.name] == []  # no array, whole or partial


def test_a_missing_or_foreign_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="cannot read the hand-off"):
        read_handoff(tmp_path / "absent.npy")
    with pytest.raises(OutputError, match="ends in .npy"):
        write_handoff(_volume(), tmp_path / "input.nrrd")
