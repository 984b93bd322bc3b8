"""A local stand-in for the Hugging Face Hub, so hub tests never touch the network.

It speaks the endpoints huggingface_hub 2.4 calls (see /work/shared/notes/hub-protocol.md): create repo,
whoami, validate-yaml, preupload (always "regular": file bytes travel inline in the commit, so no LFS/Xet),
NDJSON commits, repo info, tree, paths-info, branches and resolve (GET/HEAD). Every commit is kept, so a
commit sha resolves to the files as of that commit while `main` follows the latest one. Storage is in memory.

    hub = LocalHub().start()        # then HF_ENDPOINT=hub.url, *before* huggingface_hub is imported
    ...
    hub.list_files("user/model")    # what a test asserts on
    hub.stop()

Run it by hand to poke at it: `python tests/hub_server.py --port 8765`.
"""

import argparse
import base64
import hashlib
import json
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

USER = "local-user"
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


def git_blob_oid(content: bytes) -> str:
    """The git blob sha1 the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]  # the whole tree as of this commit: path -> content
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    sdk: str | None = None
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit oid

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision if COMMIT_SHA.fullmatch(revision) else None)
        return self.commits.get(oid)


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    authorization: str | None


class HubError(Exception):
    """An error answer: HTTP status, the `X-Error-Code` huggingface_hub maps to an exception, a message."""

    def __init__(self, status: int, code: str | None, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


class LocalHub:
    """An in-memory Hub on 127.0.0.1. `url` is what HF_ENDPOINT should be set to."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tokens: set[str] | None = None):
        self.host, self.port = host, port
        self.tokens = tokens  # None: any bearer token may write; a set: only those (others get 401)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[LoggedRequest] = []
        self.unhandled: list[str] = []  # routes this server does not know: protocol gaps show up here
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._commit_counter = 0

    # ---- lifecycle ------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "LocalHub":
        """Serve in a background thread. After `stop()`, `start()` again reuses the same port and storage."""
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @contextmanager
    def down(self):
        """`with hub.down():` the Hub is unreachable (connection refused); it comes back, same port and repos."""
        self.stop()
        try:
            yield self
        finally:
            self.start()

    def reset(self) -> None:
        """Forget every repo and logged request."""
        with self._lock:
            self.repos.clear()
            self.requests.clear()
            self.unhandled.clear()

    # ---- what tests assert on ----------------------------------------------------------------------------
    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Path -> content of a repo at a revision (branch or commit sha)."""
        with self._lock:
            repo = self.repos[(repo_type, repo_id)]
            commit = repo.resolve(revision)
            if commit is None:
                raise KeyError(f"{repo_id} has no revision {revision!r}")
            return dict(commit.files)

    def list_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[str]:
        return sorted(self.files(repo_id, revision, repo_type))

    def history(self, repo_id: str, branch: str = "main", repo_type: str = "model") -> list[Commit]:
        """Commits reachable from a branch, newest first (the first one is the repo's creation)."""
        with self._lock:
            repo = self.repos[(repo_type, repo_id)]
            commits, oid = [], repo.branches[branch]
            while oid is not None:
                commits.append(repo.commits[oid])
                oid = repo.commits[oid].parent
            return commits

    def authorizations(self) -> set[str | None]:
        """Every Authorization header received so far (None for requests without one)."""
        with self._lock:
            return {request.authorization for request in self.requests}

    # ---- storage ----------------------------------------------------------------------------------------
    def create_repo(self, repo_type: str, repo_id: str, *, private: bool = False, sdk: str | None = None) -> Repo:
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                # The Hub's 409 carries the url: create_repo(exist_ok=True) returns it.
                url = f"{self.url}/{URL_PREFIX[repo_type]}{repo_id}"
                raise HubError(409, None, f"You already created this {repo_type} repo", url=url)
            repo = Repo(repo_type, repo_id, private=private, sdk=sdk)
            self.repos[(repo_type, repo_id)] = repo
            self._commit(repo, "main", "initial commit", {".gitattributes": GITATTRIBUTES})
            return repo

    def _commit(self, repo: Repo, branch: str, message: str, files: dict[str, bytes]) -> Commit:
        self._commit_counter += 1
        parent = repo.branches.get(branch)
        digest = hashlib.sha1(f"{repo.repo_id}\n{parent}\n{message}\n{self._commit_counter}".encode())
        for path in sorted(files):
            digest.update(f"{path}\n{git_blob_oid(files[path])}\n".encode())
        date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        commit = Commit(digest.hexdigest(), parent, message, files, date)
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub  # set on the subclass LocalHub.start() makes

    # Routes: (method, regex on the unquoted-per-segment path, handler method name)
    ROUTES = [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("GET", r"/api/(?P<kind>models|datasets|spaces)/(?P<repo_id>[^/]+/[^/]+)", "repo_info"),
        ("GET", r"/api/(?P<kind>models|datasets|spaces)/(?P<repo_id>[^/]+/[^/]+)/revision/(?P<rev>[^/]+)",
         "repo_info"),
        ("GET", r"/api/(?P<kind>models|datasets|spaces)/(?P<repo_id>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(/(?P<path>.+))?",
         "tree"),
        ("POST", r"/api/(?P<kind>models|datasets|spaces)/(?P<repo_id>[^/]+/[^/]+)/paths-info/(?P<rev>[^/]+)",
         "paths_info"),
        ("POST", r"/api/(?P<kind>models|datasets|spaces)/(?P<repo_id>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)",
         "preupload"),
        ("POST", r"/api/(?P<kind>models|datasets|spaces)/(?P<repo_id>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", "commit"),
        ("POST", r"/api/(?P<kind>models|datasets|spaces)/(?P<repo_id>[^/]+/[^/]+)/branch/(?P<branch>[^/]+)",
         "create_branch"),
        ("GET", r"/((?P<kind>datasets|spaces)/)?(?P<repo_id>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
         "resolve"),
        ("HEAD", r"/((?P<kind>datasets|spaces)/)?(?P<repo_id>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
         "resolve"),
    ]

    def log_message(self, format, *args):  # keep test output clean
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    # ---- plumbing --------------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        # Revisions and paths arrive percent-encoded as one segment ("refs%2Fpr%2F1"): split first, then unquote.
        path = "/".join(unquote(segment) for segment in url.path.split("/"))
        self.query = parse_qs(url.query)
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.hub._lock:
            self.hub.requests.append(LoggedRequest(method, url.path, self.headers.get("Authorization")))
        try:
            for route_method, pattern, name in self.ROUTES:
                match = re.fullmatch(pattern, path)
                if route_method == method and match:
                    with self.hub._lock:
                        status, payload, headers = getattr(self, name)(**match.groupdict())
                    return self._send(status, payload, headers)
            with self.hub._lock:
                self.hub.unhandled.append(f"{method} {self.path}")
            raise HubError(404, None, f"local hub: no route for {method} {url.path}")
        except HubError as error:
            headers = {"X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            self._send(error.status, {"error": error.message, **error.extra}, headers)

    def _send(self, status: int, payload, headers: dict | None = None) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        if not isinstance(payload, bytes):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self) -> dict:
        return json.loads(self.body or b"{}")

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth.removeprefix("Bearer ").strip() or None

    def _require_token(self) -> None:
        token = self._token()
        if token is None or (self.hub.tokens is not None and token not in self.hub.tokens):
            raise HubError(401, None, "Invalid credentials in Authorization header")

    def _repo(self, kind: str | None, repo_id: str) -> Repo:
        repo = self.hub.repos.get((REPO_TYPES.get(kind or "models", "model"), repo_id))
        if repo is None or (repo.private and self._token() is None):
            raise HubError(404, "RepoNotFound", f"Repository Not Found for url: {self.path}")
        return repo

    def _commit_at(self, repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return commit

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.hub.url}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    # ---- endpoints ---------------------------------------------------------------------------------------
    def whoami(self):
        self._require_token()
        auth = {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}}
        return 200, {"type": "user", "name": USER, "fullname": "Local User", "orgs": [], "auth": auth}, None

    def validate_yaml(self):
        return 200, {"errors": [], "warnings": []}, None

    def create_repo(self):
        self._require_token()
        payload = self._json()
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = self.hub.create_repo(repo_type, repo_id, private=private, sdk=payload.get("sdk"))
        return 200, {"url": self._repo_url(repo), "name": repo_id, "id": repo_id}, None

    def repo_info(self, kind, repo_id, rev="main"):
        repo = self._repo(kind, repo_id)
        commit = self._commit_at(repo, rev)
        info = {
            "id": repo_id, "author": repo_id.split("/")[0], "sha": commit.oid, "private": repo.private,
            "disabled": False, "gated": False, "lastModified": commit.date, "createdAt": commit.date,
            "tags": [], "downloads": 0, "likes": 0, "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }
        if repo.repo_type == "model":
            info["modelId"] = repo_id
        if repo.repo_type == "space":
            info["sdk"] = repo.sdk
        return 200, info, None

    def tree(self, kind, repo_id, rev, path=None):
        commit = self._commit_at(self._repo(kind, repo_id), rev)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = f"{path.strip('/')}/" if path else ""
        if path and not any(p.startswith(prefix) for p in commit.files):
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}")
        entries = {}
        for file_path, content in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix):].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, min(depth, len(parts) - 1) + 1):  # the folders on the way
                folder = prefix + "/".join(parts[:i])
                entries.setdefault(folder, {"type": "directory", "path": folder, "oid": _folder_oid(folder)})
            if recursive or len(parts) == 1:
                entries[file_path] = _file_entry(file_path, content)
        return 200, list(entries.values()), None

    def paths_info(self, kind, repo_id, rev):
        commit = self._commit_at(self._repo(kind, repo_id), rev)
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = self._json().get("paths", [])
        else:
            paths = parse_qs(self.body.decode()).get("paths", [])
        entries = []
        for path in paths:
            if path in commit.files:
                entries.append(_file_entry(path, commit.files[path]))
            elif any(p.startswith(path.rstrip("/") + "/") for p in commit.files):
                entries.append({"type": "directory", "path": path, "oid": _folder_oid(path)})
        return 200, entries, None

    def preupload(self, kind, repo_id, rev):
        self._require_token()
        commit = self._commit_at(self._repo(kind, repo_id), rev)
        files = []
        for file in self._json().get("files", []):
            existing = commit.files.get(file["path"])
            oid = git_blob_oid(existing) if existing is not None else None
            files.append({"path": file["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        return 200, {"files": files, "commitOid": commit.oid}, None

    def commit(self, kind, repo_id, rev):
        self._require_token()
        repo = self._repo(kind, repo_id)
        head = self._commit_at(repo, rev)
        if rev not in repo.branches:
            raise HubError(400, None, f"local hub: can only commit on a branch, not {rev!r}")
        if self.query.get("create_pr"):
            raise HubError(400, None, "local hub: create_pr is not supported")
        files, message = dict(head.files), "commit"
        for line in self.body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value.get("summary") or message
                if value.get("parentCommit") not in (None, head.oid):
                    raise HubError(412, None, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "EntryNotFound", f"{value['path']} does not exist")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {p: c for p, c in files.items() if not p.startswith(folder)}
            else:
                raise HubError(400, None, f"local hub: {key!r} is not supported (preupload always says 'regular')")
        new = self.hub._commit(repo, rev, message, files)
        url = f"{self._repo_url(repo)}/commit/{new.oid}"
        return 200, {"success": True, "commitOid": new.oid, "commitUrl": url, "pullRequestUrl": None}, None

    def create_branch(self, kind, repo_id, branch):
        self._require_token()
        repo = self._repo(kind, repo_id)
        if branch in repo.branches:
            raise HubError(409, None, f"Reference already exists: {branch}")
        start = self._commit_at(repo, self._json().get("startingPoint") or "main")
        repo.branches[branch] = start.oid
        return 200, {}, None

    def resolve(self, kind, repo_id, rev, path):
        commit = self._commit_at(self._repo(kind, repo_id), rev)
        if path not in commit.files:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}")
        content = commit.files[path]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{git_blob_oid(content)}"',
                   "Content-Type": "application/octet-stream"}
        return 200, content, headers


def _file_entry(path: str, content: bytes) -> dict:
    return {"type": "file", "path": path, "size": len(content), "oid": git_blob_oid(content)}


def _folder_oid(path: str) -> str:
    return hashlib.sha1(f"tree {path}".encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    hub = LocalHub(port=args.port).start()
    print(f"local hub at {hub.url} (HF_ENDPOINT={hub.url}); Ctrl-C to stop")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
