"""A Hugging Face Hub on the loopback, just big enough for huggingface_hub's create_repo / create_branch /
create_commit (NDJSON, files inline as base64) and snapshot_download (repo info, tree, resolve), recording every
request so a test can assert what an upload sent. Endpoints follow huggingface_hub's HfApi:

    POST /api/repos/create                          {"name", "organization", ...} -> {"url"}; 409 if it exists
    POST /api/validate-yaml                          the README's metadata, recorded
    POST /api/models/{repo}/branch/{branch}          create a branch at main's head
    POST /api/models/{repo}/preupload/{rev}          every file "regular" (inline in the commit)
    POST /api/models/{repo}/commit/{rev}             NDJSON: a header line, then one "file" line per file
    GET  /api/models/{repo}/revision/{rev}           repo info: sha and siblings
    GET  /api/models/{repo}/tree/{rev}               the files of a commit
    HEAD|GET /{repo}/resolve/{rev}/{path}            a file, with X-Repo-Commit and ETag
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

REPO = r"(?P<repo>[^/]+/[^/]+)"


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: bytes}
    refs: dict[str, str] = field(default_factory=dict)  # branch -> sha
    messages: dict[str, str] = field(default_factory=dict)


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[dict] = []  # method, path, json body (or NDJSON lines), headers that matter
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo_id: str, ref: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.refs[ref]]

    def commits(self) -> list[dict]:
        return [r for r in self.requests if "/commit/" in r["path"]]

    # -- the Hub ---------------------------------------------------------------------------------------------
    def _sha(self, repo: Repo, rev: str) -> str | None:
        return repo.refs.get(rev) or (rev if rev in repo.commits else None)

    def route(self, method: str, path: str, body: bytes) -> tuple[int, dict, bytes]:
        if method == "POST" and path == "/api/repos/create":
            data = json.loads(body)
            repo_id = f"{data['organization']}/{data['name']}"
            if repo_id in self.repos:
                return _json(409, {"error": "You already created this model repo"})
            self.repos[repo_id] = Repo()
            return _json(200, {"url": f"{self.url}/{repo_id}", "name": repo_id})
        if method == "POST" and path == "/api/validate-yaml":
            return _json(200, {"errors": [], "warnings": []})
        m = re.fullmatch(rf"/api/models/{REPO}/(?P<op>preupload|commit|branch|revision|tree)/(?P<rev>.+?)/?", path)
        if m:
            repo = self.repos.get(m["repo"])
            if repo is None:
                return _json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return getattr(self, f"_{m['op']}")(m["repo"], repo, unquote(m["rev"]), body)
        m = re.fullmatch(rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path)
        if m and m["repo"] in self.repos:
            repo = self.repos[m["repo"]]
            sha = self._sha(repo, unquote(m["rev"]))
            data = repo.commits.get(sha or "", {}).get(unquote(m["file"]))
            if data is None:
                return _json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            etag = '"' + hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() + '"'
            return 200, {"X-Repo-Commit": sha, "ETag": etag, "Content-Type": "application/octet-stream"}, data
        if path in ("", "/"):
            return _json(200, {"hub": "fake"})
        return _json(404, {"error": f"no route {method} {path}"})

    def _preupload(self, repo_id, repo, rev, body):
        files = json.loads(body)["files"]
        return _json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                     for f in files]})

    def _commit(self, repo_id, repo, rev, body):
        lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
        parent = repo.refs.get(rev)
        tree = dict(repo.commits.get(parent, {})) if parent else {}
        for line in lines:
            if line["key"] == "file":
                assert line["value"]["encoding"] == "base64"
                tree[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            elif line["key"] == "deletedFile":
                tree.pop(line["value"]["path"], None)
        sha = hashlib.sha1(json.dumps([parent, sorted((k, hashlib.sha1(v).hexdigest()) for k, v in tree.items())])
                           .encode()).hexdigest()
        repo.commits[sha], repo.refs[rev] = tree, sha
        repo.messages[sha] = lines[0]["value"]["summary"]
        return _json(200, {"commitUrl": f"{self.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                           "pullRequestUrl": None})

    def _branch(self, repo_id, repo, rev, body):
        if "main" not in repo.refs:  # an empty repo: the branch starts empty
            repo.commits.setdefault("0" * 40, {})
            repo.refs["main"] = "0" * 40
        repo.refs.setdefault(rev, repo.refs["main"])
        return _json(200, {})

    def _revision(self, repo_id, repo, rev, body):
        sha = self._sha(repo, rev)
        if sha is None:
            return _json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
        return _json(200, {"id": repo_id, "sha": sha, "private": False,
                           "siblings": [{"rfilename": p} for p in sorted(repo.commits[sha])]})

    def _tree(self, repo_id, repo, rev, body):
        sha = self._sha(repo, rev)
        if sha is None:
            return _json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
        return _json(200, [{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(
            b"blob %d\0" % len(b) + b).hexdigest()} for p, b in sorted(repo.commits[sha].items())])

    # -- HTTP ------------------------------------------------------------------------------------------------
    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urlparse(self.path).path
                record = {"method": method, "path": path, "authorization": self.headers.get("Authorization"),
                          "content_type": self.headers.get("Content-Type")}
                if body and "ndjson" in (self.headers.get("Content-Type") or ""):
                    record["ndjson"] = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
                elif body:
                    record["json"] = json.loads(body)
                hub.requests.append(record)
                status, headers, data = hub.route(method, path, body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's names
                self._serve("GET")

            def do_HEAD(self) -> None:  # noqa: N802
                self._serve("HEAD")

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

        return Handler


def _json(status: int, obj, headers: dict | None = None) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode()


def fake_cache(root, repo_id: str, files: dict[str, bytes], revision: str = "main", commit: str | None = None):
    """Write `files` into a Hugging Face cache at `root` the way huggingface_hub lays it out: blobs named by their
    hash, snapshots/<commit>/<file> linking to them, refs/<revision> holding the commit. Returns the commit."""
    import os

    commit = commit or hashlib.sha1(repr(sorted(files)).encode() + b"".join(files.values())).hexdigest()
    base = root / f"models--{repo_id.replace('/', '--')}"
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / revision).write_text(commit)
    for name, data in files.items():
        blob = base / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = base / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return commit
