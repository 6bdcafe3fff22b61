"""Installing a model from a URL, against a real HTTP server on the loopback address: a good file, a wrong
checksum, a transfer cut short (then resumed), a server that is gone, a redirect, and what is refused."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from LDCTDenoiseLib import cli
from LDCTDenoiseLib.errors import WeightsError
from LDCTDenoiseLib.models.catalog import cached_models_dir
from LDCTDenoiseLib.models.download import download_model
from LDCTDenoiseLib.models.weights import load_model
from LDCTDenoiseLib.slicer.model_install import ModelInstall
from LDCTDenoiseLib.slicer.process import CANCELLED, DONE, FAILED


def zipped(folder: Path, inside: str = "tiny-model") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in sorted(folder.iterdir()):
            bundle.write(path, f"{inside}/{path.name}")
    return buffer.getvalue()


class Server:
    """A loopback HTTP server with the behaviours a download meets; ``requests`` records each Range asked for."""

    def __init__(self, body: bytes) -> None:
        self.body, self.cut_first, self.honour_range, self.requests = body, False, True, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.headers.get("Range"))
                if self.path == "/old-address.zip":
                    self.send_response(302)
                    self.send_header("Location", "/model.zip")
                    self.end_headers()
                    return
                start = int(self.headers["Range"][6:-1]) if self.headers.get("Range") and server.honour_range else 0
                payload = server.body[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if server.cut_first:
                    server.cut_first = False
                    self.wfile.write(payload[:len(payload) // 3])  # then the connection drops
                    return
                self.wfile.write(payload)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def published(tiny_model_dir, model_cache):
    body = zipped(tiny_model_dir)
    server = Server(body)
    yield server, hashlib.sha256(body).hexdigest()
    server.stop()


def leftovers() -> list[str]:
    folder = cached_models_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_published_model_is_downloaded_checked_and_installed_under_its_name(published, tiny_model_dir, capsys):
    server, sha = published
    assert cli.main(["models", "--install", f"{server.url}/model.zip", "--sha256", sha, "--as", "fetched",
                     "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert "fetched" in summary["models"] and leftovers() == ["fetched"]
    installed = load_model(cached_models_dir() / "fetched")
    assert installed.manifest["sha256"] == load_model(tiny_model_dir).manifest["sha256"]


def test_a_wrong_checksum_installs_nothing_and_leaves_nothing(published):
    server, sha = published
    with pytest.raises(WeightsError, match="SHA-256 is .* not the 0000"):
        download_model(f"{server.url}/model.zip", "0" * 64, "fetched")
    assert leftovers() == []


def test_a_transfer_cut_short_is_kept_and_the_same_command_resumes_it(published):
    server, sha = published
    server.cut_first = True
    with pytest.raises(WeightsError, match="bytes are kept and the same command resumes"):
        download_model(f"{server.url}/model.zip", sha, "fetched")
    assert [name for name in leftovers() if name.endswith(".part")]
    download_model(f"{server.url}/model.zip", sha, "fetched")
    assert server.requests[0] is None and server.requests[1].startswith("bytes=")  # asked for the rest only
    assert leftovers() == ["fetched"]


def test_a_server_that_ignores_ranges_restarts_the_transfer_cleanly(published):
    server, sha = published
    server.cut_first, server.honour_range = True, False
    with pytest.raises(WeightsError):
        download_model(f"{server.url}/model.zip", sha, "fetched")
    download_model(f"{server.url}/model.zip", sha, "fetched")  # a 200 with the whole file replaces the part
    assert leftovers() == ["fetched"]


def test_a_redirect_is_followed(published):
    server, sha = published
    download_model(f"{server.url}/old-address.zip", sha, "fetched")
    assert leftovers() == ["fetched"]


def test_a_server_that_is_gone_says_so_and_leaves_nothing(published):
    server, sha = published
    url = f"{server.url}/model.zip"
    server.stop()
    with pytest.raises(WeightsError, match="the download failed"):
        download_model(url, sha, "fetched")
    assert leftovers() == []


@pytest.mark.parametrize("url, sha, message", [
    ("http://example.org/model.zip", "a" * 64, "HTTPS only"),
    ("ftp://127.0.0.1/model.zip", "a" * 64, "HTTPS only"),
    ("https://example.org/model.zip", "not-a-checksum", "is not a SHA-256"),
])
def test_plain_http_off_this_machine_and_a_malformed_checksum_are_refused_before_any_request(url, sha, message,
                                                                                              model_cache):
    with pytest.raises(WeightsError, match=message):
        download_model(url, sha)
    assert leftovers() == []


def test_an_archive_whose_member_would_leave_the_model_folder_is_refused(tiny_model_dir, model_cache):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("../outside.txt", "x")
    server = Server(buffer.getvalue())
    try:
        with pytest.raises(WeightsError, match="would leave the model folder"):
            download_model(f"{server.url}/evil.zip", hashlib.sha256(buffer.getvalue()).hexdigest())
    finally:
        server.stop()
    assert leftovers() == [] and not (cached_models_dir().parent / "outside.txt").exists()


def test_the_command_line_asks_for_the_checksum_of_a_url(capsys, model_cache):
    assert cli.main(["models", "--install", "https://example.org/model.zip"]) == 1
    assert "--install URL needs --sha256" in capsys.readouterr().err


def test_the_modules_background_install_reports_progress_and_installs(published):
    server, sha256 = published
    job = ModelInstall(f"{server.url}/model.zip", sha256, name="from-slicer")
    assert job.wait(timeout=30) == DONE and job.error == ""
    assert job.folder == cached_models_dir() / "from-slicer" and job.fraction == 1.0
    load_model(job.folder)


def test_a_cancelled_background_install_installs_nothing_and_a_failed_one_says_why(published):
    server, sha256 = published
    job = ModelInstall(f"{server.url}/model.zip", sha256, name="cancelled")
    job.cancel()  # before or during the transfer: stopped at its next chunk
    assert job.wait(timeout=30) == CANCELLED
    assert not (cached_models_dir() / "cancelled").exists()
    wrong = ModelInstall(f"{server.url}/model.zip", "0" * 64, name="wrong")
    assert wrong.wait(timeout=30) == FAILED and "SHA-256" in wrong.error and "nothing was installed" in wrong.error
    assert "wrong" not in leftovers()
