"""Models as downloadable assets: a zipped model folder fetched over HTTPS, checked, then installed.

``ldct-denoise models --install URL --sha256 HEX [--as NAME]`` (and :func:`download_model`): the
archive's SHA-256 is checked before anything in it is opened; a transfer cut short keeps its part
file (named by the expected checksum) and the same command resumes it with an HTTP range request, or
starts over when the server ignores ranges; a checksum mismatch deletes what was fetched and installs
nothing. Plain HTTP is refused except on the loopback address (a local mirror, and the tests), and a
redirect may not leave HTTPS. The archive holds the model folder's files (``manifest.json``, the
weights it names, optionally ``MODEL_CARD.md``), at its top or in one folder; the manifest's own
weights checksum is verified again when the model is installed.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Optional
from urllib.parse import urlparse

from ..errors import WeightsError
from .catalog import cached_models_dir

CHUNK = 1 << 20
TIMEOUT_S = 30.0
Progress = Callable[[int, Optional[int]], None]  # (bytes so far, total bytes or None); runs on Python 3.9


def download_model(url: str, sha256: str, name: str | None = None, progress: Progress | None = None) -> Path:
    """Fetch the zipped model at ``url``, check it against ``sha256``, install it as ``name``; its folder."""
    from .weights import install_model, is_model_name

    _check_url(url)
    expected = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise WeightsError(f"--sha256 {sha256!r} is not a SHA-256 (64 hexadecimal digits); copy it from where the "
                           "model is published")
    name = name or PurePosixPath(urlparse(url).path).name.removesuffix(".zip")
    if not is_model_name(name):
        raise WeightsError(f"{name!r} cannot be a model's name: use one word without slashes, e.g. --as my-model")
    if (cached_models_dir() / name).exists():
        raise WeightsError(f"a model named {name!r} is already installed at {cached_models_dir() / name}; remove that "
                           "folder first, or install under another name with --as")
    cached_models_dir().mkdir(parents=True, exist_ok=True)
    part = cached_models_dir() / f".{expected[:16]}.zip.part"
    _fetch(url, part, progress)
    found = _sha256(part)
    if found != expected:
        part.unlink()
        raise WeightsError(f"{url}: the file's SHA-256 is {found}, not the {expected} you gave; it was deleted and "
                           "nothing was installed (a wrong checksum, or the file changed on the server)")
    staging = cached_models_dir() / f".{name}.unpacked"
    shutil.rmtree(staging, ignore_errors=True)
    try:  # the checked file is the published one: installed or refused, it is not kept
        return install_model(_unpack(part, staging), name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        part.unlink()


def _check_url(url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme == "https" and parsed.hostname:
        return
    if parsed.scheme == "http" and _is_loopback(parsed.hostname):
        return
    raise WeightsError(f"{url}: models are downloaded over HTTPS only (plain HTTP only from this machine, "
                       "127.0.0.1 or localhost); give the https:// address")


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _fetch(url: str, part: Path, progress: Progress | None) -> None:
    """Download into ``part``, continuing what an earlier cut-short transfer left there when the server allows."""
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 - scheme checked
            _check_url(response.geturl())  # a redirect may not leave HTTPS
            resumed = have and response.status == 206
            total = _total(response, have if resumed else 0)
            done = have if resumed else 0
            with part.open("ab" if resumed else "wb") as stream:
                while chunk := response.read(CHUNK):
                    stream.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            if total is not None and done < total:
                raise http.client.IncompleteRead(b"", total - done)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the part file is already whole (or longer): the checksum decides
            return
        raise WeightsError(f"{url}: the server answered {error.code} {error.reason}; nothing was installed") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        kept = part.stat().st_size if part.is_file() else 0
        again = (f"; {kept} bytes are kept and the same command resumes from there" if kept else "")
        reason = getattr(error, "reason", None) or error
        raise WeightsError(f"{url}: the download failed ({reason}){again}; nothing was installed") from None


def _total(response, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _unpack(archive: Path, staging: Path) -> Path:
    """The archive's files under ``staging`` (no member may leave it); the folder holding ``manifest.json``."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                path = PurePosixPath(member.filename)
                if path.is_absolute() or ".." in path.parts:
                    raise WeightsError(f"the archive's member {member.filename!r} would leave the model folder; "
                                       "nothing was installed")
            bundle.extractall(staging)
    except zipfile.BadZipFile as error:
        raise WeightsError(f"the downloaded file is not a zip archive of a model folder ({error}); nothing was "
                           "installed") from None
    manifests = sorted(staging.rglob("manifest.json"))
    if len(manifests) != 1:
        raise WeightsError(f"the archive holds {len(manifests)} manifest.json files where one model folder has one; "
                           "nothing was installed")
    return manifests[0].parent
