"""``download`` against a misbehaving HTTP server on 127.0.0.1: real sockets, never the internet.

Every fault must end in success with a sound file or in the kit's own error
naming the URL and the dataset, and must leave neither a file under the
final name nor a ``.part`` file behind.
"""
import hashlib
import http.server
import io
import socket
import struct
import threading
import time
import zipfile

import pytest

from coursekit.data import download as dl

DATASET = "Demo set"
TIMEOUT = 0.5  # seconds each socket operation of a download may wait; the stalling server waits longer
STALL = 1.5
TRICKLE_GAP = 0.05


def _zip(seed: bytes) -> bytes:
    """A zip of about 64 KiB that barely compresses, so that cutting it anywhere breaks it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("top/a.txt", seed * 4000)
        zf.writestr("top/b.bin", b"".join(hashlib.sha256(seed + i.to_bytes(2, "big")).digest() for i in range(2048)))
    return buffer.getvalue()


GOOD = _zip(b"good ")
OTHER = _zip(b"other ")
HTML = b"\r\n  <!DOCTYPE html>\n<html><body><h1>Service unavailable</h1></body></html>\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``/<case>.zip``; each case is one way a server can fail (or not)."""

    timeout = 5  # the server's own socket reads
    pair = threading.Barrier(2, timeout=5)  # holds two concurrent downloads of /pair.zip mid-transfer

    def do_GET(self):
        case = self.path.strip("/").removesuffix(".zip")
        try:
            getattr(self, "serve_" + case.replace("-", "_"), self.serve_missing)()
        except (BrokenPipeError, ConnectionResetError, threading.BrokenBarrierError):
            pass  # the client gave up, as it should

    def log_message(self, *args):
        pass

    def reply(self, body: bytes, length: object = None, content_type: str = "application/zip") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def serve_missing(self):
        self.send_error(404)

    def serve_error(self):
        self.send_error(500)

    def serve_good(self):
        self.reply(GOOD, len(GOOD))

    def serve_good_nolength(self):
        self.reply(GOOD)

    def serve_other(self):
        self.reply(OTHER, len(OTHER))

    def serve_truncated(self):
        self.reply(GOOD[:len(GOOD) // 2], len(GOOD) // 2)

    def serve_truncated_nolength(self):
        self.reply(GOOD[:len(GOOD) // 2])

    def serve_page(self):
        self.reply(HTML, len(HTML), "text/html")

    def serve_short(self):
        self.reply(GOOD[:1000], len(GOOD))

    def serve_bad_length(self):
        self.reply(GOOD, "abc")

    def serve_dropped_chunks(self):
        self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + GOOD[:100])

    def serve_garbage(self):
        self.wfile.write(b"garbage\r\n\r\n")

    def serve_silent(self):
        self.close_connection = True

    def serve_reset(self):
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()  # with a zero linger time: a TCP reset instead of an orderly close

    def serve_stall(self):
        time.sleep(STALL)

    def serve_stall_body(self):
        self.reply(GOOD[:1000], len(GOOD))
        self.wfile.flush()
        time.sleep(STALL)

    def serve_trickle(self):
        self.send_response(200)
        self.send_header("Content-Length", "200")
        self.end_headers()
        for _ in range(200):
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(TRICKLE_GAP)

    def serve_pair(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(GOOD)))
        self.end_headers()
        self.wfile.write(GOOD[:len(GOOD) // 2])
        self.wfile.flush()
        self.pair.wait()
        time.sleep(0.2)  # so that both clients hold their file open before either can finish
        self.wfile.write(GOOD[len(GOOD) // 2:])


@pytest.fixture(scope="module")
def server():
    """The base URL of a local server that runs in a daemon thread and stops at the end of the module."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Keep any proxy configured in the environment out of the way of 127.0.0.1."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


def _resource(server: str, *cases: str, checksum: str | None = None) -> dl.Resource:
    return dl.Resource("CMP_facade_DB_base.zip", tuple(f"{server}/{case}.zip" for case in cases), checksum)


def _md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def _fails(resource: dl.Resource, folder, error=dl.DatasetNotFoundError, **limits) -> str:
    """Download ``resource``, expect the kit's ``error``; check nothing was left; return the message."""
    with pytest.raises(error) as info:
        dl.download(resource, folder, DATASET, **{"timeout": TIMEOUT, **limits})
    message = str(info.value)
    assert DATASET in message and all(url in message for url in resource.urls), message
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert list(folder.iterdir()) == [], "a partial, invalid or temporary file was left behind"
    return message


@pytest.mark.parametrize("case", ["good", "good-nolength"])
def test_a_sound_zip_is_downloaded(server, tmp_path, case):
    target = dl.download(_resource(server, case), tmp_path, DATASET, timeout=TIMEOUT)
    assert target.read_bytes() == GOOD and [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.parametrize("case, says", [
    ("truncated", "truncated or corrupt"),
    ("truncated-nolength", "truncated or corrupt"),
    ("page", "web page"),
    ("short", f"1000 of the {len(GOOD)} bytes"),
    ("dropped-chunks", "ended in the middle"),
    ("garbage", "did not reply with HTTP"),
    ("silent", "closed the connection without replying"),
    ("reset", "reset"),
    ("bad-length", "invalid Content-Length 'abc'"),
    ("stall", "timed out"),
    ("stall-body", "timed out"),
    ("missing", "HTTP 404"),
    ("error", "HTTP 500"),
])
def test_a_fault_is_one_clear_error_and_leaves_nothing(server, tmp_path, case, says):
    message = _fails(_resource(server, case), tmp_path)
    assert says in message and "CMP_facade_DB_base.zip" in message and "COURSEKIT_DATA" in message


def test_a_tls_failure_is_one_clear_error(server, tmp_path):
    resource = dl.Resource("CMP_facade_DB_base.zip", (server.replace("http:", "https:") + "/good.zip",), None)
    assert "SSL" in _fails(resource, tmp_path)


def test_a_bad_download_without_a_checksum_is_fetched_again_next_time(server, tmp_path):
    _fails(_resource(server, "page"), tmp_path)
    assert dl.download(_resource(server, "good"), tmp_path, DATASET, timeout=TIMEOUT).read_bytes() == GOOD


def test_every_fault_falls_through_to_the_next_url(server, tmp_path):
    faults = ("truncated", "page", "short", "dropped-chunks", "garbage", "silent", "reset", "bad-length", "missing")
    target = dl.download(_resource(server, *faults, "good"), tmp_path, DATASET, timeout=TIMEOUT)
    assert target.read_bytes() == GOOD and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_trickling_server_is_abandoned_after_the_deadline(server, tmp_path):
    started = time.monotonic()
    message = _fails(_resource(server, "trickle"), tmp_path, deadline=0.3)
    assert "0.3 s deadline" in message and time.monotonic() - started < 0.3 + 2 * TIMEOUT


def test_a_bad_checksum_on_the_first_url_tries_the_second(server, tmp_path):
    target = dl.download(_resource(server, "other", "good", checksum=_md5(GOOD)), tmp_path, DATASET, timeout=TIMEOUT)
    assert target.read_bytes() == GOOD and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_checksum_error_names_every_url_once_none_gave_a_good_file(server, tmp_path):
    message = _fails(_resource(server, "other", "page", "missing", checksum=_md5(GOOD)), tmp_path, dl.ChecksumError)
    assert message.count("does not match its checksum") == 1 and "web page" in message and "deleted" in message


def test_two_concurrent_downloads_of_one_file_both_succeed(server, tmp_path):
    results = []

    def fetch():
        try:
            results.append(dl.download(_resource(server, "pair"), tmp_path, DATASET, timeout=5))
        except Exception as exc:  # reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == [tmp_path / "CMP_facade_DB_base.zip"] * 2
    assert (tmp_path / "CMP_facade_DB_base.zip").read_bytes() == GOOD and len(list(tmp_path.iterdir())) == 1
