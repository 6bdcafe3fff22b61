"""``ldct-denoise`` end to end on a phantom, geometry kept across formats, one-line errors."""

import json
import os
import signal
import stat
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from conftest import rotated_direction, skip_if_model_bundled
from LDCTDenoiseLib.cli import main
from LDCTDenoiseLib.io import read_volume, write_dicom_series, write_volume
from LDCTDenoiseLib.simulation import make_phantom


@pytest.fixture(autouse=True)
def no_installed_model(model_cache):
    """Each test sees only the models it names (a bundled one aside: see skip_if_model_bundled)."""


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def phantom_file(tmp_path, rotated=True):
    volume = make_phantom((4, 48, 48))
    if rotated:
        volume.direction = rotated_direction()
    path = tmp_path / "nd.nrrd"
    write_volume(volume, path)
    return path, volume


def assert_geometry(a, b):
    np.testing.assert_allclose(a.spacing, b.spacing, atol=1e-5)
    np.testing.assert_allclose(a.origin, b.origin, atol=1e-4)
    np.testing.assert_allclose(a.direction, b.direction, atol=1e-5)


def test_phantom_simulate_denoise_end_to_end_with_json_summary(tmp_path, tiny_model_dir, capsys):
    code, out, _ = run(capsys, "phantom", tmp_path / "nd.nrrd", "--slices", 3, "--size", 64, "--json", "--quiet")
    assert code == 0 and json.loads(out)["shape"] == [3, 64, 64]
    code, out, _ = run(capsys, "simulate", tmp_path / "nd.nrrd", tmp_path / "ld.nrrd", "--views", 60, "--json",
                       "--quiet")
    assert code == 0 and json.loads(out)["added_noise_std_hu"] > 5
    code, out, err = run(capsys, "denoise", tmp_path / "ld.nrrd", tmp_path / "dn.nrrd", "--weights", tiny_model_dir,
                         "--device", "cpu", "--batch-size", 2, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["run"]["device"] == "cpu" and summary["run"]["batch_size"] == 2
    assert summary["model"]["sha256"] and summary["files_written"] == 1
    assert "slice" in err  # tqdm progress on stderr
    assert read_volume(tmp_path / "dn.nrrd").array.shape == (3, 64, 64)


def test_geometry_survives_dicom_to_nrrd_to_denoise_to_nrrd_and_to_dicom(tmp_path, tiny_model_dir, capsys):
    volume = make_phantom((4, 48, 48))
    volume.direction = rotated_direction()
    volume.origin = (-40.5, 12.25, 300.0)
    write_dicom_series(volume, tmp_path / "dicom")
    source = read_volume(tmp_path / "dicom")
    write_volume(source, tmp_path / "in.nrrd")
    for output in ("out.nrrd", "out-dicom"):
        code, _, err = run(capsys, "denoise", tmp_path / "in.nrrd", tmp_path / output, "--weights", tiny_model_dir,
                           "--quiet")
        assert code == 0, err
        assert_geometry(read_volume(tmp_path / output), volume)
    code, _, err = run(capsys, "denoise", tmp_path / "dicom", tmp_path / "dicom-out", "--weights", tiny_model_dir,
                       "--quiet")
    assert code == 0, err
    assert_geometry(read_volume(tmp_path / "dicom-out"), volume)
    np.testing.assert_allclose(read_volume(tmp_path / "dicom-out").array,
                               np.rint(read_volume(tmp_path / "out.nrrd").array), atol=1.0)


def test_without_a_model_denoise_fails_in_one_line_and_writes_nothing(tmp_path, capsys):
    skip_if_model_bundled()
    path, _ = phantom_file(tmp_path)
    code, out, err = run(capsys, "denoise", path, tmp_path / "out.nrrd")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "no trained model is bundled yet" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nd.nrrd"]  # no output, no partial file


def test_demo_without_a_model_stops_with_how_to_train_one(tmp_path, capsys):
    skip_if_model_bundled()
    code, _, err = run(capsys, "demo", "--out", tmp_path / "demo")
    assert code == 1 and "Train and export one" in err
    assert not (tmp_path / "demo").exists()


def test_demo_with_weights_writes_volumes_and_summary(tmp_path, tiny_model_dir, capsys):
    path, _ = phantom_file(tmp_path, rotated=False)
    code, out, err = run(capsys, "demo", "--data", path, "--weights", tiny_model_dir, "--out", tmp_path / "demo",
                         "--quiet", "--json")
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert written == ["denoised.nrrd", "low_dose.nrrd", "normal_dose.nrrd", "summary.json"]
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary == json.loads(out)
    assert summary["rmse_hu_vs_normal_dose"]["low_dose"] > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["denoise", "{tmp}/missing", "{tmp}/o.nrrd"], "does not exist"),
        (["denoise", "{tmp}/nd.nrrd", "{tmp}/nd.nrrd"], "is the input"),
        (["denoise", "{tmp}/nd.nrrd", "{tmp}/o.png"], "unknown output format"),
        (["denoise", "{tmp}/nd.nrrd", "{tmp}/no-folder/o.nrrd", "--weights", "{tmp}/nowhere"],
         "does not exist; create it first"),  # checked before the model is even looked for
        (["denoise", "{tmp}/nd.nrrd", "{tmp}/o.nrrd", "--device", "quantum"], "unknown device"),
        (["denoise", "{tmp}/nd.nrrd", "{tmp}/o.nrrd", "--weights", "{tmp}/nowhere"], "no model manifest"),
        (["simulate", "{tmp}/nd.nrrd", "{tmp}/o.nrrd", "--dose", "2"], "dose fraction"),
        (["denoise", "{tmp}/nd.nrrd", "{tmp}/o.nrrd", "--strength", "150"], "strength must be between 0 and 100 %"),
        (["denoise", "{tmp}/nd.nrrd", "{tmp}/o.nrrd", "--keep-noise", "-3"], "keep-noise must be between 0 and 100 HU"),
        (["denoise", "{tmp}/nd.nrrd", "{tmp}/o.nrrd", "--self-ensemble", "3"], "self-ensemble must be one of"),
    ],
)
def test_bad_input_gives_one_line_reason_and_no_output(tmp_path, tiny_model_dir, capsys, argv, message):
    phantom_file(tmp_path)
    argv = [a.format(tmp=tmp_path) for a in argv]
    if argv[0] == "denoise" and "--weights" not in argv:
        argv += ["--weights", str(tiny_model_dir)]
    code, out, err = run(capsys, *argv, "--quiet")
    assert code == 1 and message in err and err.count("\n") == 1
    assert not (tmp_path / "o.nrrd").exists() and not (tmp_path / "o.png").exists()


def test_strength_is_applied_and_recorded_in_the_file_header_and_the_dicom_description(tmp_path, tiny_model_dir,
                                                                                       capsys):
    path, volume = phantom_file(tmp_path)
    outputs = {}
    for strength in ("100", "40"):
        for name in (f"s{strength}.nrrd", f"s{strength}-dicom"):
            code, _, err = run(capsys, "denoise", path, tmp_path / name, "--weights", tiny_model_dir, "--quiet",
                               "--strength", strength)
            assert code == 0, err
            outputs[name] = read_volume(tmp_path / name)
    full, partial = outputs["s100.nrrd"], outputs["s40.nrrd"]
    np.testing.assert_allclose(partial.array - volume.array, 0.4 * (full.array - volume.array), atol=1e-3)
    assert partial.metadata["header"] == {"LDCTDenoise_model": "tiny", "LDCTDenoise_strength_percent": "40",
                                          "LDCTDenoise_keep_noise_hu": "0", "LDCTDenoise_self_ensemble": "1"}
    description = pydicom.dcmread(sorted((tmp_path / "s40-dicom").iterdir())[0]).SeriesDescription
    assert description.endswith("denoised 40% (LDCTDenoise)")
    np.testing.assert_allclose(outputs["s40-dicom"].array, np.rint(partial.array), atol=1.0)


def test_keep_noise_is_applied_and_recorded_in_the_file_header_and_the_dicom_description(tmp_path, tiny_model_dir,
                                                                                         capsys):
    path, _ = phantom_file(tmp_path)
    code, out, err = run(capsys, "denoise", path, tmp_path / "k-dicom", "--weights", tiny_model_dir,
                         "--keep-noise", "8")
    assert code == 0, err
    assert "keep 8 HU: " in out and "% applied" in out
    first = pydicom.dcmread(sorted((tmp_path / "k-dicom").iterdir())[0])
    assert first.SeriesDescription.endswith("denoised 100%, keep 8 HU (LDCTDenoise)")
    code, _, err = run(capsys, "denoise", path, tmp_path / "k.nrrd", "--weights", tiny_model_dir, "--keep-noise", "8",
                       "--quiet")
    assert code == 0, err
    assert read_volume(tmp_path / "k.nrrd").metadata["header"]["LDCTDenoise_keep_noise_hu"] == "8"


def test_the_kept_noise_follows_the_series_kernel_from_its_dicom_header(tmp_path, capsys):
    from conftest import tiny_generator
    from LDCTDenoiseLib.models.normalization import Normalization
    from LDCTDenoiseLib.models.weights import save_model

    save_model(tiny_generator(), tmp_path / "model", Normalization(), provenance={"purpose": "tests"}, name="tiny",
               inference={"keep_noise_hu": 20.0})
    path, _ = phantom_file(tmp_path)
    write_dicom_series(read_volume(path), tmp_path / "lung")
    for file in (tmp_path / "lung").iterdir():
        header = pydicom.dcmread(file)
        header.ConvolutionKernel = "LUNG"
        header.save_as(file)
    code, out, err = run(capsys, "denoise", tmp_path / "lung", tmp_path / "out.nrrd", "--weights", tmp_path / "model",
                         "--json", "--quiet")
    assert code == 0, err
    summary = json.loads(out)["run"]
    assert summary["keep_noise_hu"] == 100.0
    assert summary["kernel"] == "sharp kernel (header: ConvolutionKernel LUNG)"
    code, out, err = run(capsys, "denoise", tmp_path / "lung", tmp_path / "std.nrrd", "--weights", tmp_path / "model",
                         "--kernel", "standard", "--json", "--quiet")
    assert code == 0, err
    assert json.loads(out)["run"]["keep_noise_hu"] == 20.0


def test_the_self_ensemble_is_recorded_in_the_run_and_the_file_header(tmp_path, tiny_model_dir, capsys):
    path, _ = phantom_file(tmp_path)
    code, out, err = run(capsys, "denoise", path, tmp_path / "e.nrrd", "--weights", tiny_model_dir,
                         "--self-ensemble", "2", "--quiet", "--json")
    assert code == 0, err
    assert json.loads(out)["run"]["self_ensemble"] == 2
    assert read_volume(tmp_path / "e.nrrd").metadata["header"]["LDCTDenoise_self_ensemble"] == "2"


def test_the_text_summary_names_the_model_in_one_line_and_json_keeps_the_whole_record(tmp_path, tiny_model_dir,
                                                                                      capsys):
    path, _ = phantom_file(tmp_path)
    code, out, _ = run(capsys, "denoise", path, tmp_path / "o.nrrd", "--weights", tiny_model_dir, "--quiet")
    assert code == 0 and "normalization" not in out and len(out.splitlines()) <= 12
    assert "model: tiny" in out and "slices/s, strength 100 %" in out
    code, out, _ = run(capsys, "denoise", path, tmp_path / "p.nrrd", "--weights", tiny_model_dir, "--quiet", "--json")
    assert json.loads(out)["model"]["normalization"]


def test_an_output_inside_the_input_series_folder_is_refused_before_any_work(tmp_path, capsys):
    volume = make_phantom((3, 32, 32))
    write_dicom_series(volume, tmp_path / "series")
    code, _, err = run(capsys, "denoise", tmp_path / "series", tmp_path / "series" / "denoised", "--weights",
                       tmp_path / "nowhere", "--quiet")
    assert code == 1 and "lies inside the input folder" in err
    assert sorted(p.name for p in (tmp_path / "series").iterdir()) == [f"IM{i:05d}.dcm" for i in (1, 2, 3)]


def test_existing_output_needs_overwrite(tmp_path, tiny_model_dir, capsys):
    path, _ = phantom_file(tmp_path)
    (tmp_path / "o.nrrd").write_text("keep me")
    code, _, err = run(capsys, "denoise", path, tmp_path / "o.nrrd", "--weights", tiny_model_dir, "--quiet")
    assert code == 1 and "--overwrite" in err and (tmp_path / "o.nrrd").read_text() == "keep me"
    code, _, _ = run(capsys, "denoise", path, tmp_path / "o.nrrd", "--weights", tiny_model_dir, "--quiet",
                     "--overwrite")
    assert code == 0 and read_volume(tmp_path / "o.nrrd").array.shape == (4, 48, 48)


def test_info_reports_torch_devices_and_model_search(capsys, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("LDCTDENOISE_WEIGHTS", str(tiny_model_dir))
    code, out, _ = run(capsys, "info", "--json")
    info = json.loads(out)
    assert code == 0 and info["torch"] and info["auto_device"] in {"cpu", "cuda", "mps"}
    assert info["models_searched"][0] == {"path": str(tiny_model_dir / "manifest.json"), "present": True}


def test_console_script_runs_as_a_real_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "LDCTDenoiseLib.launcher", "info", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and json.loads(result.stdout)["command"] == "info"


def test_simulate_with_scanner_noise_records_the_recipe_and_adds_about_the_asked_noise(tmp_path, capsys):
    write_volume(make_phantom((2, 128, 128)), tmp_path / "nd.nrrd")
    code, out, _ = run(capsys, "simulate", tmp_path / "nd.nrrd", tmp_path / "ld.nrrd", "--noise-hu", 30,
                       "--filter", "hann", "--cutoff", 0.8, "--views", 240, "--json", "--quiet")
    summary = json.loads(out)
    assert code == 0 and summary["simulation"]["kind"] == "scanner"
    assert summary["simulation"]["filter"] == "hann" and summary["simulation"]["views"] == 240
    noise = read_volume(tmp_path / "ld.nrrd").array - read_volume(tmp_path / "nd.nrrd").array
    assert 15.0 < noise[:, 54:74, 54:74].std() < 45.0  # near the body centre


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("output", ["o.nrrd", "o.nii", "o.nii.gz", "o.mha"])
def test_a_short_write_as_on_a_full_disk_is_an_error_and_leaves_nothing(tmp_path, tiny_model_dir, capsys,
                                                                         monkeypatch, output):
    """A stand-in for a full filesystem: ITK 'writes' but the file ends early, as it does with 1 MiB free
    (it reports that only on stderr and returns normally)."""
    from LDCTDenoiseLib.io import volume as volume_io

    path, _ = phantom_file(tmp_path)
    real_write = volume_io.sitk.WriteImage

    def short_write(image, name, *args, **kwargs):
        real_write(image, name, *args, **kwargs)
        with open(name, "r+b") as file:
            file.truncate(os.path.getsize(name) // 2)

    monkeypatch.setattr(volume_io.sitk, "WriteImage", short_write)
    code, _, err = run(capsys, "denoise", path, tmp_path / output, "--weights", tiny_model_dir, "--quiet")
    assert code == 1 and "is the disk full? Nothing was written" in err
    assert not (tmp_path / output).exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("output", ["o.nrrd", "o.nii", "o.nii.gz", "o.mha", "o-dicom"])
def test_sigterm_during_the_write_exits_143_and_leaves_nothing(tmp_path, tiny_model_dir, capsys, monkeypatch,
                                                               output):
    from LDCTDenoiseLib.io import dicom_write
    from LDCTDenoiseLib.io import volume as volume_io

    path, _ = phantom_file(tmp_path)
    real_save, real_write = dicom_write.save_dataset, volume_io.sitk.WriteImage
    written = []

    def save_then_terminate(dataset, name):
        real_save(dataset, name)
        written.append(name)
        if len(written) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    def write_then_terminate(image, name, *args, **kwargs):
        real_write(image, name, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(dicom_write, "save_dataset", save_then_terminate)
    monkeypatch.setattr(volume_io.sitk, "WriteImage", write_then_terminate)
    code, _, err = run(capsys, "denoise", path, tmp_path / output, "--weights", tiny_model_dir, "--quiet")
    assert code == 143 and err.strip().splitlines()[-1] == "ldct-denoise: terminated (SIGTERM); nothing was written"
    assert not (tmp_path / output).exists() and _leftovers(tmp_path) == []


def test_outputs_follow_the_umask(tmp_path, tiny_model_dir, capsys):
    path, _ = phantom_file(tmp_path)
    previous = os.umask(0o022)
    try:
        assert run(capsys, "denoise", path, tmp_path / "o.nrrd", "--weights", tiny_model_dir, "--quiet")[0] == 0
        assert run(capsys, "denoise", path, tmp_path / "o-dicom", "--weights", tiny_model_dir, "--quiet")[0] == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "o.nrrd").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "o-dicom").stat().st_mode) == 0o755


@pytest.mark.parametrize(("signum", "code", "line"), [
    (signal.SIGINT, 130, "ldct-denoise: cancelled; nothing was written"),
    (signal.SIGTERM, 143, "ldct-denoise: terminated (SIGTERM); nothing was written"),
])
def test_a_signal_while_the_command_is_still_importing_gives_one_line_and_its_exit_code(tmp_path, signum, code, line):
    # A stand-in "torch" placed first on the path sends the signal from inside the import chain, which is
    # the window (seconds, importing torch) where a real signal lands before main() has started.
    (tmp_path / "torch.py").write_text(f"import os\nos.kill(os.getpid(), {int(signum)})\n")
    environment = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-c", "import sys; from LDCTDenoiseLib.launcher import main; "
                             "sys.exit(main(['info']))"], capture_output=True, text=True, env=environment, timeout=120,
                            preexec_fn=_interruptible)
    assert result.returncode == code and result.stderr.strip().splitlines() == [line]


def _interruptible() -> None:
    """Ctrl-C's default action for the child: a suite started in the background (``make test &``) ignores
    SIGINT, a child inherits that, and Python then leaves it ignored, as a user's terminal never would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
