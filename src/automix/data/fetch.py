"""Download an archive, verify its MD5 and extract it, never leaving a bad archive behind.

The bytes go to a temp file next to the target; only a complete download (as many bytes as the
server announced) whose MD5 matches is renamed to the real name, so an interrupted or tampered
download can never be picked up later. Extraction uses tarfile's ``data`` filter (no absolute
paths, no ``..``, no links out of the destination).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.parse
import urllib.request

CHUNK = 1 << 20


def file_md5(path: str) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, md5: str | None, dest_dir: str, filename: str | None = None,
             timeout: float = 60.0) -> str:
    """Download ``url`` to ``dest_dir/filename`` (default: the URL's last path part) and return
    the path. An existing file with the right MD5 is reused.

    Raises:
        ValueError: truncated download or MD5 mismatch (naming the file, expected and actual MD5);
            the partial file is deleted.
        OSError: network failure (naming the URL).
    """
    if not isinstance(url, str) or not url:
        raise TypeError(f"url must be a non-empty str, got {url!r}")
    if md5 is not None and (not isinstance(md5, str) or len(md5) != 32):
        raise ValueError(f"md5 must be a 32-character hex string or None, got {md5!r}")
    filename = filename or os.path.basename(urllib.parse.urlparse(url).path)
    if not filename:
        raise ValueError(f"cannot take a file name from url {url!r}; pass filename")
    os.makedirs(dest_dir, exist_ok=True)
    target = os.path.join(dest_dir, filename)
    if os.path.isfile(target) and md5 is not None and file_md5(target) == md5.lower():
        return target
    fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=dest_dir)
    try:
        h = hashlib.md5(usedforsecurity=False)
        got = 0
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    expected = resp.headers.get("Content-Length")
                    while True:
                        block = resp.read(CHUNK)
                        if not block:
                            break
                        out.write(block)
                        h.update(block)
                        got += len(block)
            except http.client.IncompleteRead as e:  # the connection closed early
                raise ValueError(f"download of {url} to {target} was truncated: got {got + len(e.partial)} "
                                 f"bytes, {e.expected} missing; no file was kept") from None
            except (OSError, http.client.HTTPException) as e:  # URLError / HTTPError are OSErrors
                raise OSError(f"download of {url} to {target} failed: {e}") from e
        if expected is not None and got != int(expected):
            raise ValueError(f"download of {url} to {target} was truncated: got {got} of {expected} "
                             "bytes; no file was kept")
        actual = h.hexdigest()
        if md5 is not None and actual != md5.lower():
            raise ValueError(f"MD5 mismatch for {target} (from {url}): expected {md5.lower()}, got {actual}; "
                             "the download was deleted")
        os.replace(tmp, target)
        tmp = None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return target


def extract(archive: str, dest_dir: str) -> None:
    """Extract a (gzipped) tar archive into ``dest_dir`` with the safe ``data`` filter."""
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest_dir, filter="data")
            else:  # Python without extraction filters: refuse anything escaping dest_dir
                root = os.path.realpath(dest_dir)
                for m in tar.getmembers():
                    p = os.path.realpath(os.path.join(dest_dir, m.name))
                    if not (p == root or p.startswith(root + os.sep)) or m.issym() or m.islnk():
                        raise ValueError(f"archive {archive} member {m.name!r} is unsafe")
                tar.extractall(dest_dir)
    except (tarfile.TarError, EOFError) as e:
        raise ValueError(f"cannot extract archive {archive}: {e}") from None


def download_and_extract(url: str, md5: str | None, dest_dir: str, filename: str | None = None) -> str:
    """``download`` then ``extract`` into ``dest_dir``; returns the archive path (kept, so a
    later call with the same MD5 does not download again). ``md5=None`` skips the check."""
    archive = download(url, md5, dest_dir, filename)
    extract(archive, dest_dir)
    return archive
