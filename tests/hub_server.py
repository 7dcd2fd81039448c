"""A loopback HTTP server that speaks the Hugging Face Hub's file protocol, for hermetic download tests.

``HEAD`` and ``GET`` on ``/{repo_id}/resolve/{revision}/{filename}`` answer with ``X-Repo-Commit``, ``ETag`` and
``Content-Length`` (and honour ``Range``); unknown repositories, revisions and files get 404 with the Hub's
``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``). Revisions are branch or tag names, or
commit hashes. Every request is logged so tests can count downloads.
"""

import hashlib
import http.server
import threading
import urllib.parse
from typing import Dict, List, Optional, Tuple


def _serve(handler) -> http.server.ThreadingHTTPServer:
    """A threaded HTTP server of ``handler`` on a free loopback port, serving in a daemon thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _stop(server: http.server.ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


class FakeHub:
    def __init__(self):
        self.repos: Dict[str, Dict[str, Dict[str, bytes]]] = {}  # repo -> commit -> filename -> data
        self.refs: Dict[str, Dict[str, str]] = {}  # repo -> branch/tag -> commit
        self.requests: List[Tuple[str, str]] = []
        self._server: Optional[http.server.ThreadingHTTPServer] = None

    # ---- content
    def commit(self, repo_id: str, files: Dict[str, bytes], ref: str = "main", tag: Optional[str] = None) -> str:
        """Add a commit holding ``files`` (on top of the ref's current files); move ``ref`` (and ``tag``) to it."""
        previous = self.repos.get(repo_id, {}).get(self.refs.get(repo_id, {}).get(ref, ""), {})
        content = {**previous, **files}
        sha = hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in content.items()))
                           .encode() + str(len(self.repos.get(repo_id, {}))).encode()).hexdigest()
        self.repos.setdefault(repo_id, {})[sha] = content
        self.refs.setdefault(repo_id, {})[ref] = sha
        if tag:
            self.refs[repo_id][tag] = sha
        return sha

    def count(self, method: str, filename: str = "") -> int:
        return sum(1 for m, p in self.requests if m == method and p.endswith("/" + filename if filename else ""))

    # ---- serving
    @property
    def endpoint(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"  # the server listens on loopback only

    def __enter__(self):
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _resolve(self):
                path = urllib.parse.urlsplit(self.path).path
                parts = [urllib.parse.unquote(p) for p in path.lstrip("/").split("/")]
                if len(parts) < 5 or parts[2] != "resolve":
                    return 404, {"X-Error-Code": "RepoNotFound"}, b""
                repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                if repo_id not in hub.repos:
                    return 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b""
                commit = hub.refs[repo_id].get(revision, revision)
                if commit not in hub.repos[repo_id]:
                    return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b""
                files = hub.repos[repo_id][commit]
                if filename not in files:
                    return 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                                 "X-Repo-Commit": commit}, b""
                data = files[filename]
                return 200, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}, data

            def _answer(self, send_body: bool):
                hub.requests.append((self.command, urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)))
                status, headers, data = self._resolve()
                start = 0
                rng = self.headers.get("Range")
                if status == 200 and rng and rng.startswith("bytes="):
                    start = int(rng[len("bytes="):].split("-")[0] or 0)
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                body = data[start:]
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send_body:
                    for i in range(0, len(body), 1 << 20):
                        self.wfile.write(body[i:i + (1 << 20)])

            def do_HEAD(self):
                self._answer(send_body=False)

            def do_GET(self):
                self._answer(send_body=True)

        self._server = _serve(Handler)
        return self

    def __exit__(self, *exc):
        _stop(self._server)


class FileServer:
    """A loopback HTTP server of plain files: ``files[path] = bytes`` served at ``url(path)``.

    ``truncate[path] = n`` announces the whole file's length but sends only its first ``n`` bytes and closes the
    connection (an interrupted transfer). ``html[path]`` is served as ``text/html``. Every request is logged.
    """

    def __init__(self):
        self.files: Dict[str, bytes] = {}
        self.truncate: Dict[str, int] = {}
        self.requests: List[Tuple[str, str]] = []
        self._server: Optional[http.server.ThreadingHTTPServer] = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{path.lstrip('/')}"

    def count(self, path: str = "") -> int:
        return sum(1 for m, p in self.requests if m == "GET" and p.endswith(path))

    def __enter__(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
                server.requests.append(("GET", path))
                data = server.files.get(path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                html = data.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8" if html else "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                sent = data[:server.truncate[path]] if path in server.truncate else data
                self.wfile.write(sent)
                self.wfile.flush()
                if path in server.truncate:
                    self.close_connection = True

        self._server = _serve(Handler)
        return self

    def __exit__(self, *exc):
        _stop(self._server)
