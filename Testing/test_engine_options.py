"""One options type from every front end to the engine: the value set at the panel, the console, the
command line or the background job is the value the engine runs with, in one unit (strength a fraction)."""

from __future__ import annotations

import argparse
import dataclasses
import types

import pytest

from conftest import add_volume_node, small_volume
from LDCTDenoiseLib import cli
from LDCTDenoiseLib.engine import inference
from LDCTDenoiseLib.engine.options import EngineOptions, add_engine_arguments, options_from_args
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.io import write_volume_file
from LDCTDenoiseLib.slicer import logic, worker
from LDCTDenoiseLib.slicer.settings import SessionSettings, engine_options

# Every field away from its default, so a setting dropped anywhere on the way shows.
CHANGED = EngineOptions(device="cpu", precision="fp32", batch_size=3, compile="off", channels_last=False,
                        strength=0.35, keep_noise_hu=12.5, kernel="sharp", runtime="torch", self_ensemble=4,
                        adapt_minutes=2.5,
                        adapt_steps=7, adapt_seed=3)


def test_every_field_is_changed_in_the_reference_options():
    defaults = EngineOptions()
    assert all(getattr(CHANGED, f.name) != getattr(defaults, f.name) for f in dataclasses.fields(EngineOptions))


def test_argv_round_trip_keeps_every_setting_and_percent_stays_at_the_flag():
    argv = CHANGED.to_argv()
    assert argv[argv.index("--strength") + 1] == "35"
    assert EngineOptions.from_argv(argv) == CHANGED
    assert EngineOptions().to_argv() == [] and EngineOptions.from_argv([]) == EngineOptions()


def test_the_command_line_and_the_worker_parse_the_same_flags_into_the_same_options():
    argv = CHANGED.to_argv()
    command_line = cli._parser().parse_args(["denoise", "in.nrrd", "out.nrrd", *argv])
    assert options_from_args(command_line) == CHANGED
    child = argparse.ArgumentParser()
    add_engine_arguments(child)
    assert options_from_args(child.parse_args(argv)) == CHANGED


def test_a_bad_value_is_refused_once_with_the_front_ends_unit():
    with pytest.raises(InputError, match="strength must be between 0 and 100 %; got 150 %"):
        EngineOptions.from_argv(["--strength", "150"])
    with pytest.raises(InputError, match="self-ensemble must be one of"):
        EngineOptions(self_ensemble=3)


def test_the_panel_hands_every_engine_setting_to_the_options():
    panel = types.SimpleNamespace(device="cpu", batchSize=3, precision="fp32", runtime="torch", compile="off",
                                  strength=35.0, keepNoise=False, kernel="sharp", selfEnsemble="4", adaptToScan=True,
                                  adaptMinutes=2.5)
    options = engine_options(panel)
    assert options == CHANGED.replace(channels_last=True, keep_noise_hu=0.0, adapt_steps=None, adapt_seed=0)
    panel.keepNoise, panel.batchSize, panel.adaptToScan = True, 0, False
    unticked = engine_options(panel)
    assert unticked.keep_noise_hu is None and unticked.batch_size is None and not unticked.adapts


def test_the_panels_choices_are_kept_between_sessions_and_an_unknown_one_is_skipped():
    class Store(dict):  # QSettings' three calls
        def contains(self, key):
            return key in self

        def value(self, key):
            return self[key]

        def setValue(self, key, value):
            self[key] = value

    panel = types.SimpleNamespace(device="cpu", model="structkpn", weightsPath="/m", precision="bf16",
                                  runtime="openvino", compile="on", selfEnsemble="8")
    store = Store()
    SessionSettings.fromParameters(panel).toSettings(store)
    assert store["LDCTDenoise/runtime"] == "openvino"
    restored = SessionSettings.fromSettings(store)
    assert restored == SessionSettings.fromParameters(panel)
    assert SessionSettings.fromSettings(Store()) == SessionSettings()

    class Strict(types.SimpleNamespace):  # a parameter node refuses a choice it does not offer
        def __setattr__(self, name, value):
            if value == "retired":
                raise ValueError(value)
            super().__setattr__(name, value)

    target = Strict(**vars(panel))
    dataclasses.replace(restored, device="retired").applyTo(target)
    assert target.device == "cpu" and target.runtime == "openvino"


def engine_options_received(monkeypatch) -> list[EngineOptions]:
    """The options every VolumeDenoiser made from now on was given (the engine's own record of them)."""
    received = []
    real_init = inference.VolumeDenoiser.__init__

    def recording_init(self, model, options=None):
        received.append(options)
        real_init(self, model, options)

    monkeypatch.setattr(inference.VolumeDenoiser, "__init__", recording_init)
    return received


def test_the_panel_to_engine_path_through_the_background_process_and_worker(monkeypatch, tmp_path, tiny_model_dir):
    """Widget -> logic -> job -> child argv -> worker -> VolumeDenoiser: the same options arrive."""
    import slicer

    scene = slicer.vtkMRMLScene()
    ldct = add_volume_node(scene, small_volume(), "LDCT")
    panel = types.SimpleNamespace(device="cpu", batchSize=3, precision="fp32", runtime="torch", compile="off",
                                  strength=35.0, keepNoise=False, kernel="sharp", selfEnsemble="4", adaptToScan=True,
                                  adaptMinutes=1.0)
    sent = engine_options(panel)
    job = logic.denoise(scene, ldct, options=sent, weights=str(tiny_model_dir), wait_for_completion=False)
    argv = job.background.process.args
    job.wait()
    received = engine_options_received(monkeypatch)
    flags = argv[argv.index("LDCTDenoiseLib.slicer.worker") + 3:]  # after the two files, gone with the job
    write_volume_file(small_volume(), tmp_path / "in.nrrd")
    assert worker.main([str(tmp_path / "in.nrrd"), str(tmp_path / "out.nrrd"), *flags]) == 0  # the child's parsing
    assert received == [sent]
    assert job.output_node.GetAttribute("LDCTDenoise.strength_percent") == "35"


def test_the_command_line_path_reaches_the_engine(monkeypatch, tmp_path, tiny_model_dir):
    from LDCTDenoiseLib.io import write_volume
    from LDCTDenoiseLib.simulation import make_phantom

    source = tmp_path / "in.nrrd"
    write_volume(make_phantom((2, 32, 32)), source)
    received = engine_options_received(monkeypatch)
    assert cli.main(["denoise", str(source), str(tmp_path / "out.nrrd"), "--model", str(tiny_model_dir), "--quiet",
                     *CHANGED.to_argv()]) == 0
    assert received == [CHANGED]
