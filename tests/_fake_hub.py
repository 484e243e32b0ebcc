"""A loopback HTTP server that answers like the Hugging Face Hub, for download tests without a network.

It speaks the part of the Hub protocol `huggingface_hub` uses to fetch files: ``HEAD``/``GET
/{repo}/resolve/{revision}/{path}`` with the ``X-Repo-Commit`` and ``ETag`` headers (a file's
commit and content hash), and ``GET /api/models/{repo}/revision/{revision}`` (repository info) and
``/api/models/{repo}/tree/{commit}`` (a snapshot's files). Point `huggingface_hub` at it with ``HF_ENDPOINT``.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """Files per repository; ``requests`` records every (method, path) served."""

    def __init__(self, files: dict[str, dict[str, bytes]]) -> None:
        self.files = files
        self.requests: list[tuple[str, str]] = []
        self.url = ""

    def _lookup(self, path: str) -> tuple[str, bytes | dict | list, str] | None:
        path = unquote(path.split("?")[0])
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/"):]
            for repo, files in self.files.items():
                if rest.startswith(f"{repo}/revision/"):  # repository info at a branch or tag
                    siblings = [{"rfilename": name} for name in files]
                    return "json", {"id": repo, "sha": COMMIT, "siblings": siblings}, COMMIT
                if rest.startswith(f"{repo}/tree/"):  # the files of a commit
                    return "json", [{"type": "file", "path": name, "size": len(data),
                                     "oid": hashlib.sha1(data).hexdigest()} for name, data in files.items()], COMMIT
            return None
        for repo, files in self.files.items():
            prefix = f"/{repo}/resolve/"
            if path.startswith(prefix):
                revision, _, name = path[len(prefix):].partition("/")
                if name in files:  # a commit resolves to itself, a branch to the repository's head
                    return "file", files[name], revision if len(revision) == len(COMMIT) else COMMIT
        return None

    @contextmanager
    def serve(self) -> Iterator["FakeHub"]:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                found = hub._lookup(self.path)
                if found is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                kind, content, commit = found
                data = json.dumps(content).encode() if kind == "json" else content
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                if kind == "file":
                    self.send_header("X-Repo-Commit", commit)
                    self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                else:
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

            def log_message(self, *args) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
