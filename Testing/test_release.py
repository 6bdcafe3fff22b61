"""What the extension index checks offline: licence, metadata URLs that point at files, a valid index entry."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "release"))

import check_extension  # noqa: E402


def test_the_licence_metadata_and_index_entry_pass_the_index_s_offline_checks():
    for passed, text in [check_extension.license_file(), *check_extension.metadata(), *check_extension.index_entry()]:
        assert passed, text


def test_an_index_entry_with_a_key_the_schema_does_not_allow_fails_with_the_reason(tmp_path, monkeypatch):
    (tmp_path / "release").mkdir()
    entry = json.loads((check_extension.REPOSITORY / "release" / "LDCTDenoise.json").read_text())
    (tmp_path / "release" / "LDCTDenoise.json").write_text(json.dumps({**entry, "description": "x", "tier": 2}))
    (tmp_path / "CMakeLists.txt").write_text((check_extension.REPOSITORY / "CMakeLists.txt").read_text())
    monkeypatch.setattr(check_extension, "REPOSITORY", tmp_path)
    failures = [text for passed, text in check_extension.index_entry() if not passed]
    assert sorted(failures) == ["index entry: description is not in schema v1.0.1 (additionalProperties is false)",
                                "index entry: tier 2 must be one of (1, 3, 5)"]


def test_a_screenshot_url_whose_file_is_missing_fails(tmp_path, monkeypatch):
    (tmp_path / "CMakeLists.txt").write_text((check_extension.REPOSITORY / "CMakeLists.txt").read_text())
    monkeypatch.setattr(check_extension, "REPOSITORY", tmp_path)
    failures = [text for passed, text in check_extension.metadata() if not passed]
    assert failures == ["EXTENSION_ICONURL: Resources/Icons/LDCTDenoise.png does not exist",
                        "EXTENSION_SCREENSHOTURLS: Resources/Screenshots/LDCTDenoise.png does not exist"]
