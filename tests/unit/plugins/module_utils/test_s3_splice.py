"""The splice(2) download path of s3_stage against a real local HTTP server (real sockets and
``http.client``): bytes land where they belong, short bodies and stalls are reported, and a kernel
or file system that refuses splice falls back to the buffer without losing or repeating bytes."""

import errno
import http.client
import os
import socket
import threading

import pytest
from ansible_collections.llmops.serving.plugins.module_utils import s3_body
from ansible_collections.llmops.serving.plugins.module_utils import s3_stage_common as common

pytestmark = pytest.mark.skipif(getattr(os, "splice", None) is None, reason="os.splice needs Linux and Python >= 3.10")


class OneShotServer(object):
    """Answers one request on 127.0.0.1 with ``Content-Length: length`` and ``body`` (which may be
    shorter), sent in ``pieces``; ``stall`` keeps the connection open after the body without sending."""

    def __init__(self, body, length=None, pieces=4, stall=None):
        self.body = body
        self.length = len(body) if length is None else length
        self.pieces = pieces
        self.stall = stall
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn = self.listener.accept()[0]
        try:
            self._answer(conn)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading (cancel test)
        finally:
            conn.close()
            self.listener.close()

    def _answer(self, conn):
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.length
        step = max(1, len(self.body) // self.pieces)
        # the first piece travels with the headers, so http.client buffers some body bytes
        conn.sendall(head + self.body[:step])
        for start in range(step, len(self.body), step):
            conn.sendall(self.body[start:start + step])
        if self.stall is not None:
            self.stall.wait(10)

    def response(self, timeout=5):
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        self.conn.request("GET", "/object")
        return self.conn.getresponse()


@pytest.fixture
def serve():
    servers = []

    def start(*args, **kwargs):
        servers.append(OneShotServer(*args, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        if getattr(server, "conn", None) is not None:
            server.conn.close()


def _file(tmp_path, size):
    path = tmp_path / "dest"
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, size)
    return path, fd


def test_splice_writes_the_body_at_its_offset_and_completes_the_response(serve, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    server = serve(data)
    resp = server.response()
    path, fd = _file(tmp_path, 4096 + len(data))
    try:
        done = s3_body.splice_body(resp, fd, 4096, len(data), bytearray(64 * 1024), 5, threading.Event(), "obj")
    finally:
        os.close(fd)
    assert done == len(data)
    content = path.read_bytes()
    assert content[:4096] == b"\0" * 4096
    assert content[4096:] == data
    assert resp.isclosed()  # read to its end: urllib3 may hand the connection back to the pool


def test_short_body_returns_what_arrived(serve, tmp_path):
    data = os.urandom(2 * 1024 * 1024)
    server = serve(data[: 1024 * 1024], length=len(data))
    resp = server.response()
    path, fd = _file(tmp_path, len(data))
    try:
        done = s3_body.splice_body(resp, fd, 0, len(data), bytearray(64 * 1024), 5, threading.Event(), "obj")
    finally:
        os.close(fd)
    assert done == 1024 * 1024
    assert path.read_bytes()[:done] == data[:done]
    assert not resp.isclosed()  # incomplete: the caller closes it with its connection


def test_stalled_server_is_a_named_read_timeout(serve, tmp_path):
    stall = threading.Event()
    data = os.urandom(256 * 1024)
    server = serve(data, length=len(data) * 2, pieces=1, stall=stall)
    resp = server.response()
    _path, fd = _file(tmp_path, len(data) * 2)
    try:
        want = r"no data for 0.5 s while downloading k \(endpoint http://x\) \(read timeout\); check that the server"
        with pytest.raises(common.StageError, match=want):
            s3_body.splice_body(resp, fd, 0, len(data) * 2, bytearray(64 * 1024), 0.5, threading.Event(),
                                "downloading k (endpoint http://x)")
    finally:
        stall.set()
        os.close(fd)


def test_cancel_stops_between_chunks(serve, tmp_path):
    data = os.urandom(4 * 1024 * 1024)
    server = serve(data)
    resp = server.response()
    _path, fd = _file(tmp_path, len(data))
    cancel = threading.Event()
    cancel.set()
    try:
        with pytest.raises(s3_body._CancelledError):
            s3_body.splice_body(resp, fd, 0, len(data), bytearray(64 * 1024), 5, cancel, "obj")
    finally:
        os.close(fd)


def test_socket_refusing_splice_falls_back_without_losing_buffered_bytes(serve, tmp_path, monkeypatch):
    data = os.urandom(1024 * 1024 + 5)
    server = serve(data)
    resp = server.response()
    path, fd = _file(tmp_path, len(data))
    real_splice = os.splice

    def refuse_socket(src, dst, count, *args, **kwargs):
        if src == resp.fileno():
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_splice(src, dst, count, *args, **kwargs)

    monkeypatch.setattr(os, "splice", refuse_socket)
    buf = bytearray(64 * 1024)
    try:
        with pytest.raises(s3_body._SpliceUnsupportedError) as caught:
            s3_body.splice_body(resp, fd, 0, len(data), buf, 5, threading.Event(), "obj")
        done = caught.value.done
        assert 0 < done < len(data)  # what http.client had buffered with the headers
        # the rest through http.client, as the engine's buffer path continues
        view = memoryview(buf)
        pos = done
        while True:
            got = resp.readinto(view)
            if not got:
                break
            os.pwrite(fd, view[:got], pos)
            pos += got
    finally:
        os.close(fd)
    assert pos == len(data)
    assert path.read_bytes() == data


def test_file_system_refusing_splice_copies_through_the_buffer(serve, tmp_path, monkeypatch):
    data = os.urandom(3 * 1024 * 1024)
    server = serve(data)
    resp = server.response()
    path, fd = _file(tmp_path, len(data))
    real_splice = os.splice

    def refuse_file(src, dst, count, *args, **kwargs):
        if dst == fd:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_splice(src, dst, count, *args, **kwargs)

    monkeypatch.setattr(os, "splice", refuse_file)
    try:
        done = s3_body.splice_body(resp, fd, 0, len(data), bytearray(64 * 1024), 5, threading.Event(), "obj")
    finally:
        os.close(fd)
    assert done == len(data)
    assert path.read_bytes() == data
    assert resp.isclosed()


class _Body(object):
    def __init__(self, inner):
        self._raw_stream = type("Raw", (), {"_fp": inner, "_fp_bytes_read": 0, "_decoder": None, "chunked": False})()


def test_splice_only_for_plain_http_and_untouched_responses(serve):
    data = b"x" * 10
    server = serve(data)
    resp = server.response()
    body = _Body(resp)
    assert s3_body.splice_target(body, "http://127.0.0.1:9000") is resp
    assert s3_body.splice_target(body, "https://s3.example.com") is None  # TLS is decrypted in user space
    assert s3_body.splice_target(body, None) is None  # AWS S3: https
    body._raw_stream._fp_bytes_read = 3
    assert s3_body.splice_target(body, "http://127.0.0.1:9000") is None
    resp.read()
