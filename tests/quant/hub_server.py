"""A local Hugging Face Hub on 127.0.0.1 for push tests: the routes the real `huggingface_hub` client calls.

create repo (`POST /api/repos/create`), repo info (`GET /api/models/{id}`), file downloads
(`GET /{id}/resolve/{rev}/{path}`), README metadata check
(`POST /api/validate-yaml`), `POST .../preupload/{rev}` (every file "regular", so contents travel
inline) and `POST .../commit/{rev}` (NDJSON). It records repos, committed files and every request's
path and headers, and checks the bearer token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)


@dataclass
class Hub:
    """State shared with the handler: the accepted token, repos, and a log of requests."""

    token: str
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


_RESOLVE_PATH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/[^/]+/(?P<file>[^?]+)")
_REPO_PATH = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<op>preupload|commit)/(?P<rev>[^/?]+))?")


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            return

        def _reply(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorised(self) -> bool:
            with hub.lock:
                hub.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                    }
                )
            if self.headers.get("Authorization") != f"Bearer {hub.token}":
                self._reply(401, {"error": "Invalid credentials"})
                return False
            return True

        def do_GET(self) -> None:
            if not self._authorised():
                return
            resolve = _RESOLVE_PATH.match(self.path)
            if resolve is not None:
                self._send_file(resolve["repo"], resolve["file"])
                return
            match = _REPO_PATH.match(self.path)
            repo = hub.repos.get(match["repo"]) if match else None
            if match is None or repo is None:
                self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                return
            sha = repo.commits[-1] if repo.commits else "0" * 40
            self._reply(200, {"id": match["repo"], "sha": sha, "private": repo.private})

        def _send_file(self, repo_id: str, path: str) -> None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            elif path not in repo.files:
                self._reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            else:
                self.send_response(200)
                self.send_header("Content-Length", str(len(repo.files[path])))
                self.end_headers()
                self.wfile.write(repo.files[path])

        def do_POST(self) -> None:
            if not self._authorised():
                return
            body = self._body()
            if self.path.startswith("/api/validate-yaml"):
                self._reply(200, {"errors": [], "warnings": []})
                return
            if self.path.startswith("/api/repos/create"):
                payload = json.loads(body)
                repo_id = f"{payload['organization']}/{payload['name']}"
                with hub.lock:
                    if repo_id in hub.repos:
                        self._reply(409, {"error": "You already created this model repo"})
                        return
                    hub.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
                self._reply(200, {"url": f"http://{self.headers['Host']}/{repo_id}", "name": repo_id})
                return
            match = _REPO_PATH.match(self.path)
            repo = hub.repos.get(match["repo"]) if match else None
            if match is None or repo is None:
                self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                return
            if match["op"] == "preupload":
                files = json.loads(body)["files"]
                modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                self._reply(200, {"files": modes})
            elif match["op"] == "commit":
                added = {}
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        added[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    elif item["key"] != "header":
                        self._reply(400, {"error": f"unsupported operation {item['key']}"})
                        return
                oid = hashlib.sha1(body).hexdigest()
                with hub.lock:
                    repo.files.update(added)
                    repo.commits.append(oid)
                url = f"http://{self.headers['Host']}/{match['repo']}/commit/{oid}"
                self._reply(200, {"commitUrl": url, "commitOid": oid, "success": True})
            else:
                self._reply(404, {"error": "no such route"})

    return Handler


class LocalHub:
    """`with LocalHub(token) as hub:` serves on `hub.endpoint` until the block ends."""

    def __init__(self, token: str) -> None:
        self.state = Hub(token)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> LocalHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
