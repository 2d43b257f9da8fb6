"""A recording HTTP proxy in front of the LLM Engine stand-in, for the gateway-fault drill.

The stand-in's request log (``GET /_standin/requests``) says which requests arrived and what they
were answered, but not when. The drill needs the arrival times to check the client's waits (backoff,
``Retry-After``), so the module is pointed at this proxy: it stamps each request with
``time.monotonic()`` as it arrives, forwards it unchanged (headers, body) to the stand-in, and relays
the answer (status, headers such as ``Retry-After``, body). When the client has already given up on
a request (its timeout), relaying fails quietly, as it would for a real gateway.
"""

import base64
import binascii
import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
              "proxy-authorization", "proxy-authenticate", "content-length"}


class GatewayProxy:
    """``with GatewayProxy(upstream_url) as proxy``: ``proxy.url`` to call, ``proxy.arrivals()`` to read."""

    def __init__(self, upstream):
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self._entries = []
        self._lock = threading.Lock()
        # called with (method, path, user) as each request arrives, before it is forwarded: lets a
        # test arrange the gateway's answer relative to the moment the client calls
        self.on_arrival = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # the test output shows what matters
                pass

            def do_GET(self):
                proxy._forward(self)

            do_POST = do_PUT = do_DELETE = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def arrivals(self, user, method=None, path=None):
        """(monotonic arrival time, method, path, upstream status, wall-clock arrival time) of each
        request of ``user``, oldest first."""
        with self._lock:
            entries = [tuple(e[:5]) for e in self._entries if e[5] == user]
        return [e for e in entries if (method is None or e[1] == method) and (path is None or e[2] == path)]

    def _forward(self, handler):
        arrived, wall = time.monotonic(), time.time()
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        headers = dict((k, v) for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP)
        path = urlsplit(handler.path).path
        user = _basic_user(handler.headers.get("Authorization"))
        entry = [arrived, handler.command, path, None, wall, user]
        with self._lock:
            self._entries.append(entry)
        if self.on_arrival is not None:
            self.on_arrival(handler.command, path, user)
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=120)
        try:
            connection.request(handler.command, handler.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            entry[3] = response.status
            answer = [(k, v) for k, v in response.getheaders()
                      if k.lower() not in HOP_BY_HOP and k.lower() not in ("date", "server")]
        finally:
            connection.close()
        try:
            handler.send_response(response.status)
            for key, value in answer:
                handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left: the answer is lost, as the drill intends
        handler.close_connection = True


def _basic_user(header):
    """The user id of an HTTP Basic header (LLM Engine's username; the password is empty)."""
    if not header or not header.startswith("Basic "):
        return None
    try:
        return base64.b64decode(header[len("Basic "):]).decode("utf-8").split(":", 1)[0]
    except (binascii.Error, UnicodeDecodeError):
        return None
