"""bench/run's private emulator: the same pinned moto as infra/local/emulator (with serve.py's
memory fix), served differently in two ways that the overhead figure depends on.

Keep-alive. moto's own server (werkzeug) closes the connection after every response, so every
SDK call would pay a TCP connect that no warm Lambda pays against AWS (the SDK pools its
connections across invocations). waitress keeps HTTP/1.1 connections open, as AWS does; the
raw calls and the function under test both reuse theirs.

A request log. The emulator's own time must be measured on the very requests the function
sent (item sizes drive moto's transaction time), so every AWS request is recorded (service,
target, content type, body, and the milliseconds moto spent answering it) and
GET /_bench/requests hands the log over and clears it. bench/driver.py replays a grant's three
requests on a fresh table to time them.

    python bench/emulator.py PORT
"""

import io
import json
import os
import re
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "infra", "local"))

import serve  # noqa: E402,F401  (importing it applies the memory fix)
import waitress  # noqa: E402
from moto.server import DomainDispatcherApplication, create_backend_app  # noqa: E402

LOG_PATH = "/_bench/requests"
SCOPE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/")


class RequestLog:
    """WSGI middleware: records each AWS request before moto sees it; serves the log."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.entries = []

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == LOG_PATH:
            with self.lock:
                entries, self.entries = self.entries, []
            body = json.dumps(entries).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        scope = SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        entry = {
            "service": scope.group(1) if scope else None,
            "target": environ.get("HTTP_X_AMZ_TARGET"),
            "content_type": environ.get("CONTENT_TYPE"),
            "body": body.decode("utf-8", errors="replace"),
        }
        t = time.monotonic_ns()
        response = self.app(environ, start_response)  # moto answers in full here (a list)
        entry["ms"] = (time.monotonic_ns() - t) / 1e6
        with self.lock:
            self.entries.append(entry)
        return response


def main():
    port = int(sys.argv[1])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = RequestLog(DomainDispatcherApplication(create_backend_app))
    waitress.serve(app, host="127.0.0.1", port=port, threads=4, _quiet=True)


if __name__ == "__main__":
    main()
