"""Weights are safetensors + a manifest; a file that fails its checksum is refused."""

import json

import pytest
import torch

from conftest import TINY_SIZES, skip_if_model_bundled, tiny_generator
from LDCTDenoiseLib.errors import NoModelError, WeightsError
from LDCTDenoiseLib.models import weights
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.models.weights import MANIFEST_NAME, WEIGHTS_NAME, find_model, load_model, save_model, sha256_of
from LDCTDenoiseLib.networks.hu2024 import Generator, GeneratorConfig


def test_saved_model_loads_with_same_weights_config_and_normalisation(tmp_path):
    generator = tiny_generator(seed=3)
    norm = Normalization(-1000.0, 2000.0)
    save_model(generator, tmp_path, norm, provenance={"trained_on": "nothing"}, name="t")
    loaded = load_model(tmp_path)
    assert loaded.generator.config == GeneratorConfig(**TINY_SIZES)
    assert loaded.normalization == norm
    assert loaded.manifest["provenance"] == {"trained_on": "nothing"}
    assert loaded.manifest["sha256"] == sha256_of(tmp_path / WEIGHTS_NAME)
    for key, value in generator.state_dict().items():
        torch.testing.assert_close(loaded.generator.state_dict()[key], value)
    assert not loaded.generator.training


def test_model_loads_from_manifest_folder_or_weights_path(tiny_model_dir):
    for path in (tiny_model_dir, tiny_model_dir / MANIFEST_NAME, tiny_model_dir / WEIGHTS_NAME):
        assert load_model(path).name == "tiny"


def test_half_precision_file_is_smaller_and_loads_as_float32(tmp_path):
    generator = tiny_generator()
    save_model(generator, tmp_path / "full", Normalization(), {})
    save_model(generator, tmp_path / "half", Normalization(), {}, half=True)
    assert (tmp_path / "half" / WEIGHTS_NAME).stat().st_size < (tmp_path / "full" / WEIGHTS_NAME).stat().st_size
    loaded = load_model(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in loaded.generator.parameters())


def test_modified_weights_file_is_refused_with_checksum_message(tiny_model_dir):
    path = tiny_model_dir / WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum mismatch.*export or copy the model folder again"):
        load_model(tiny_model_dir)


def test_truncated_weights_file_is_refused(tiny_model_dir):
    path = tiny_model_dir / WEIGHTS_NAME
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(WeightsError, match="checksum mismatch"):
        load_model(tiny_model_dir)


def test_not_a_safetensors_file_is_refused_even_with_a_matching_checksum(tiny_model_dir):
    path = tiny_model_dir / WEIGHTS_NAME
    path.write_bytes(b"\x80\x04this is a pickle, not safetensors")
    manifest = json.loads((tiny_model_dir / MANIFEST_NAME).read_text())
    manifest["sha256"] = sha256_of(path)
    (tiny_model_dir / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        load_model(tiny_model_dir)


def test_weights_of_another_architecture_size_are_refused(tiny_model_dir):
    manifest = json.loads((tiny_model_dir / MANIFEST_NAME).read_text())
    manifest["config"] = GeneratorConfig(base_width=8, depth=2).to_dict()
    (tiny_model_dir / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="does not fit"):
        load_model(tiny_model_dir)


def test_missing_weights_file_and_missing_manifest_are_explained(tiny_model_dir, tmp_path):
    (tiny_model_dir / WEIGHTS_NAME).unlink()
    with pytest.raises(WeightsError, match="is missing"):
        load_model(tiny_model_dir)
    with pytest.raises(WeightsError, match="no model manifest"):
        load_model(tmp_path / "nowhere")


def test_foreign_json_is_not_taken_for_a_manifest(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(WeightsError, match="not an LDCTDenoise model manifest"):
        load_model(tmp_path)


def test_without_any_model_the_error_lists_where_it_looked_and_how_to_get_one(model_cache):
    skip_if_model_bundled()
    with pytest.raises(NoModelError) as error:
        find_model()
    message = str(error.value)
    assert "no trained model is bundled yet" in message and "Random weights are never used" in message
    assert str(model_cache / "models" / "default") in message


def test_model_in_the_cache_folder_is_found(model_cache):
    skip_if_model_bundled()
    save_model(Generator(GeneratorConfig(**TINY_SIZES)), model_cache / "models" / "default", Normalization(), {},
               name="cached")
    assert find_model().name == "cached"


def test_explicit_environment_weights_win(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("LDCTDENOISE_WEIGHTS", str(tiny_model_dir))
    assert find_model().name == "tiny"



def test_environment_weights_that_name_no_model_are_an_error_not_a_fall_back(monkeypatch, tmp_path):
    monkeypatch.setenv("LDCTDENOISE_WEIGHTS", str(tmp_path / "typo"))
    with pytest.raises(WeightsError, match=r"\$LDCTDENOISE_WEIGHTS: no model manifest"):
        find_model()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("config", {"base_width": 4, "depth": 2, "cbam_reduction": 2, "colour": 1},
         r"does not describe .*unknown generator settings \['colour'\]"),
        ("config", "big", "does not describe .*a generator config is a mapping .* got str"),
        ("config", {"base_width": 4, "depth": 0, "cbam_reduction": 2}, r"does not describe .*depth must lie in 1\.\.6"),
        ("config", {"base_width": -4, "depth": 2, "cbam_reduction": 2}, "base_width and cbam_reduction must be >= 1"),
        ("config", {"base_width": "4", "depth": 2, "cbam_reduction": 2}, "base_width must be a whole number; got '4'"),
        ("config", {"base_width": 4, "depth": 2.5, "cbam_reduction": 2}, "depth must be a whole number; got 2.5"),
        ("normalization", {"kind": "linear-clip", "hu_min": 100, "hu_max": -100}, "normalization .* is invalid"),
        ("normalization", {"kind": "linear-clip", "hu_min": float("nan"), "hu_max": 1}, "normalization .* is invalid"),
        ("normalization", {"kind": "log"}, "normalization .* is invalid"),
        ("weights_file", "../../../../etc/hostname", "must be a file name in the model folder"),
        ("weights_file", "/etc/hostname", "must be a file name in the model folder"),
    ],
)
def test_each_bad_manifest_field_is_a_weights_error(tiny_model_dir, monkeypatch, field, value, message):
    manifest = json.loads((tiny_model_dir / MANIFEST_NAME).read_text())
    manifest[field] = value
    (tiny_model_dir / MANIFEST_NAME).write_text(json.dumps(manifest))
    hashed = []
    monkeypatch.setattr(weights, "sha256_of", lambda path: hashed.append(path) or "0")
    with pytest.raises(WeightsError, match=message):
        load_model(tiny_model_dir)
    assert hashed == []  # refused before any file named by the manifest is read
