"""A loopback HTTP server that answers the Hub API calls huggingface_hub and datasets make, so uploads and
downloads run their real client code end to end with no network: create_repo, preupload, commit (model and
dataset repos), then repo info, tree listing, paths-info and file resolution of what was committed."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pytest

COMMIT = "a" * 40


class FakeHub(BaseHTTPRequestHandler):
    """Records every request in `log`; `failures[kind]` answers that many of a kind with 503 first.

    `committed` maps path -> bytes of the last commit (any repo); `repos[(kind, repo_id)]` keeps every
    repo's files, which the read endpoints serve.
    """

    log: list[dict[str, Any]]
    failures: dict[str, int]
    committed: dict[str, bytes]
    repos: dict[tuple[str, str], dict[str, bytes]]
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _failing(self, kind: str) -> bool:
        if self.failures.get(kind, 0) > 0:
            self.failures[kind] -= 1
            self._reply(503, {"error": "try again"})
            return True
        return False

    # -- writes ----------------------------------------------------------------------------------
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        path = urlparse(self.path).path
        kind = {"/api/repos/create": "create", "/api/validate-yaml": "validate"}.get(path)
        if kind is None and "/paths-info/" in path:
            kind = "paths-info"
        kind = kind or path.split("/")[-2]
        self.log.append({"kind": kind, "path": self.path, "auth": self.headers.get("Authorization")})
        if self._failing(kind):
            return
        if kind == "create":
            request = json.loads(body)
            self.log[-1]["visibility"] = request.get("visibility")
            self.log[-1]["type"] = request.get("type", "model")
            host = self.headers["Host"]
            self._reply(200, {"url": f"http://{host}/{request.get('organization')}/{request['name']}"})
        elif kind == "validate":
            self.log[-1]["readme"] = json.loads(body)["content"]
            self._reply(200, {"errors": [], "warnings": []})
        elif kind == "preupload":
            files = json.loads(body)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            self._reply(200, {"files": modes, "commitOid": "0" * 40})
        elif kind == "commit":
            repo_kind, repo = self._repo(path, "/commit/")
            files = self.repos.setdefault((repo_kind, repo), {})
            self.committed.clear()
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item.get("key") == "file":
                    data = base64.b64decode(item["value"]["content"])
                    self.committed[item["value"]["path"]] = data
                    files[item["value"]["path"]] = data
            url = f"http://{self.headers['Host']}/{repo}/commit/{COMMIT}"
            self._reply(200, {"commitUrl": url, "commitOid": COMMIT})
        elif kind == "paths-info":
            repo_kind, repo = self._repo(path, "/paths-info/")
            wanted = parse_qs(body.decode()).get("paths", [])
            if not wanted and body.startswith(b"{"):
                wanted = json.loads(body).get("paths", [])
            files = self.repos.get((repo_kind, repo), {})
            self._reply(200, [entry for entry in self._entries(files, "") if entry["path"] in wanted])
        else:
            self._reply(404, {"error": f"unexpected {self.path}"})

    # -- reads -----------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlparse(self.path)
        path = unquote(url.path)
        self.log.append({"kind": "get", "path": self.path, "method": self.command})
        if path.startswith(("/api/datasets/", "/api/models/")):
            self._api_get(path, parse_qs(url.query))
        elif "/resolve/" in path:
            self._resolve(path)
        else:
            self._reply(404, {"error": f"unexpected {self.path}"})

    def _repo(self, path: str, marker: str) -> tuple[str, str]:
        """("datasets" | "models", "org/name") of an /api/... path up to `marker`."""
        head = path.split(marker, 1)[0]
        kind, _, repo = head.removeprefix("/api/").partition("/")
        return kind, repo

    def _entries(self, files: dict[str, bytes], prefix: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        dirs: set[str] = set()
        for name, data in sorted(files.items()):
            if prefix and not name.startswith(prefix.rstrip("/") + "/"):
                continue
            rest = name[len(prefix.rstrip("/") + "/") :] if prefix else name
            if "/" in rest:
                dirs.add((prefix.rstrip("/") + "/" if prefix else "") + rest.split("/", 1)[0])
                continue
            oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            out.append({"type": "file", "path": name, "size": len(data), "oid": oid})
        out += [{"type": "directory", "path": d, "oid": "0" * 40, "size": 0} for d in sorted(dirs)]
        return out

    def _api_get(self, path: str, query: dict[str, list[str]]) -> None:
        rest = path.removeprefix("/api/")
        kind, _, rest = rest.partition("/")
        org, _, rest = rest.partition("/")
        name, _, rest = rest.partition("/")
        repo = f"{org}/{name}"
        files = self.repos.get((kind, repo))
        if files is None:
            self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return
        if rest == "" or rest.startswith("revision/"):
            info = {
                "id": repo,
                "_id": "0" * 24,
                "sha": COMMIT,
                "private": False,
                "siblings": [{"rfilename": f} for f in sorted(files)],
                "lastModified": "2026-01-01T00:00:00.000Z",
                "tags": [],
                "downloads": 0,
                "likes": 0,
            }
            self._reply(200, info)
        elif rest.startswith("tree/"):
            _, _, tail = rest.partition("/")
            _, _, prefix = tail.partition("/")
            entries = self._entries(files, prefix)
            if query.get("recursive", ["false"])[0].lower() == "true":
                entries = [e for e in self._entries(files, "") if not prefix or e["path"].startswith(prefix)]
            self._reply(200, entries)
        else:
            self._reply(404, {"error": f"unexpected {self.path}"})

    def _resolve(self, path: str) -> None:
        head, _, tail = path.partition("/resolve/")
        parts = head.strip("/").split("/")
        kind = "datasets" if parts[0] == "datasets" else "models"
        repo = "/".join(parts[-2:])
        _, _, filename = tail.partition("/")
        data = self.repos.get((kind, repo), {}).get(filename)
        if data is None:
            self._reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            return
        etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": COMMIT, "Accept-Ranges": "bytes"}
        self._send(200, data, "application/octet-stream", headers)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[type[FakeHub], str]]:
    """(handler class with its log, failures and files, endpoint URL) of a fresh loopback Hub."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the session is offline; this is loopback
    handler = type("Hub", (FakeHub,), {"log": [], "failures": {}, "committed": {}, "repos": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
