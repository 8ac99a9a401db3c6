"""A Hugging Face Hub look-alike on loopback, so tests can push and load repos with the real client code and no network.

It answers the subset of the Hub protocol that `huggingface_hub` (2.4) and `transformers` (5) use to create a model
or Space repo, commit files to it (regular files inline, large or binary ones through the git-LFS "basic" transfer) and
download them again (repo info, tree listing, `resolve` with HEAD, GET and Range). Errors carry the Hub's status
codes and `X-Error-Code` headers, because the client turns exactly those into `RepositoryNotFoundError`,
`RevisionNotFoundError` and `EntryNotFoundError`, and transformers relies on them to skip optional files.

Xet storage is not implemented. With `hf_xet` installed the client uploads every LFS file through Xet without asking
the server, so client processes must run with `HF_HUB_DISABLE_XET=1`: `FakeHub.client_env` sets it. Downloads never
use Xet because the server sends no `X-Xet-*` headers.

Model and Space repos (no datasets), only the `main` branch (files can also be read at any past commit sha), no pull
requests. As on the Hub, a model and a Space with the same id are two repos: the client tells them apart by URL, with
`/api/models/` or `/api/spaces/` in API paths and a `spaces/` prefix in git and file URLs. Repos live on disk under the
given root: file contents in `objects/<sha256>`, and per repo, under `models/<id>` or `spaces/<id>`, `refs/main` plus
one JSON file per commit holding the complete file list of that commit (and for a Space the SDK it was created with).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

USER = "user"
BRANCH = "main"
MODEL, SPACE = "model", "space"
# The SDKs the Hub runs Spaces with (huggingface_hub's SPACES_SDK_TYPES); a Space cannot be created without one.
SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
# The Hub stores files of 10 MB or more (MiB here), and any file whose first bytes look binary, in LFS.
LFS_THRESHOLD = 10 * 1024 * 1024
CHUNK = 1 << 20
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.DOTALL)
_RANGE = re.compile(r"bytes=(?:(\d+)-(\d*)|-(\d+))")
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
_REPO = r"(?P<repo_id>[^/]+/[^/]+)"
_REVISION = r"(?P<revision>[^/]+)"
# The repo type is plural in API paths ("/api/models/...", "/api/spaces/..."); git and file URLs prefix Spaces with
# "spaces/" and models with nothing, so a model route sees no `repo_type` and its handler's default applies.
_API_TYPE = rf"(?P<repo_type>{MODEL}|{SPACE})s"
_URL_TYPE = rf"(?:(?P<repo_type>{SPACE})s/)?"
_URL_PREFIX = {MODEL: "", SPACE: f"{SPACE}s/"}


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _git_blob_id(content: bytes) -> str:
    """The git object id of a blob, which the Hub reports as a file's `oid` and uses as the ETag of regular files."""
    return _sha1(b"blob %d\0" % len(content) + content)


def _lfs_pointer(sha256: str, size: int) -> bytes:
    """The pointer file git stores in place of an LFS file; the Hub reports its git id and size for LFS files."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    """A timestamp in the Hub's format, which `huggingface_hub.utils.parse_datetime` expects."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _card_data(readme: str) -> dict[str, Any]:
    """The YAML metadata block of a README (a model card); raises `yaml.YAMLError` when it does not parse."""
    match = _FRONT_MATTER.match(readme)
    data = yaml.safe_load(match.group(1)) if match else None
    return data if isinstance(data, dict) else {}


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers on other server threads never see a half-written ref or commit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{threading.get_ident()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


@dataclass(frozen=True)
class Blob:
    """A file of a commit. Its content is the object `sha256`; `git_oid` is the id the Hub shows for it, which for LFS
    files is the id of their pointer file."""

    sha256: str
    size: int
    lfs: bool
    git_oid: str

    @classmethod
    def regular(cls, content: bytes) -> Blob:
        return cls(hashlib.sha256(content).hexdigest(), len(content), False, _git_blob_id(content))

    @classmethod
    def large(cls, sha256: str, size: int) -> Blob:
        return cls(sha256, size, True, _git_blob_id(_lfs_pointer(sha256, size)))

    @property
    def upload_oid(self) -> str:
        """What the client compares with its local file to skip unchanged ones: sha256 for LFS, git id otherwise."""
        return self.sha256 if self.lfs else self.git_oid

    def tree_entry(self, path: str) -> dict[str, Any]:
        """The file's entry in a `/tree` listing."""
        entry = {"type": "file", "oid": self.git_oid, "size": self.size, "path": path}
        return {**entry, "lfs": self._lfs_info("oid")} if self.lfs else entry

    def sibling(self, path: str) -> dict[str, Any]:
        """The file's entry in the `siblings` of a model or Space info."""
        entry = {"rfilename": path, "size": self.size, "blobId": self.git_oid}
        return {**entry, "lfs": self._lfs_info("sha256")} if self.lfs else entry

    def _lfs_info(self, sha256_key: str) -> dict[str, Any]:
        """LFS details, whose sha256 is called "oid" in `/tree` listings and "sha256" in repo infos."""
        return {sha256_key: self.sha256, "size": self.size, "pointerSize": len(_lfs_pointer(self.sha256, self.size))}


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    title: str
    date: str
    files: dict[str, Blob]

    @classmethod
    def load(cls, path: Path) -> Commit:
        data = json.loads(path.read_bytes())
        return cls(**{**data, "files": {name: Blob(**blob) for name, blob in data["files"].items()}})

    def dump(self) -> bytes:
        return json.dumps(asdict(self)).encode()


class HubError(Exception):
    """An error answer, shaped like the Hub's: the client reads `X-Error-Code` and `X-Error-Message`."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    @classmethod
    def repo_not_found(cls) -> HubError:
        return cls(404, "Repository not found", "RepoNotFound")

    @classmethod
    def revision_not_found(cls, revision: str) -> HubError:
        return cls(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    @classmethod
    def entry_not_found(cls, commit: str | None, message: str = "Entry not found") -> HubError:
        """`X-Repo-Commit` lets the client record the missing file under `.no_exist/<commit>` for offline use."""
        return cls(404, message, "EntryNotFound", {"X-Repo-Commit": commit} if commit else {})

    def response(self) -> Response:
        headers = {"X-Error-Message": self.message, **self.headers}
        if self.code is not None:
            headers["X-Error-Code"] = self.code
        return _json({"error": self.message}, self.status, headers)


@dataclass
class Response:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload).encode(), status, {"Content-Type": "application/json", **(headers or {})})


class Store:
    """Repos and file contents on disk. Commits are serialised by a lock; everything else is read-only or atomic."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    def object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256

    def has_object(self, sha256: str) -> bool:
        return self.object_path(sha256).is_file()

    def add_object(self, content: bytes) -> Blob:
        blob = Blob.regular(content)
        if not self.has_object(blob.sha256):
            _write_atomically(self.object_path(blob.sha256), content)
        return blob

    def receive_object(self, sha256: str, stream: BinaryIO, size: int) -> bool:
        """Stream an LFS upload to disk and keep it only when its content really has this sha256."""
        target = self.object_path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as temporary:
            for chunk in iter(lambda: stream.read(min(CHUNK, size - temporary.tell())), b""):
                digest.update(chunk)
                temporary.write(chunk)
        if digest.hexdigest() != sha256:
            os.unlink(temporary.name)
            return False
        os.replace(temporary.name, target)
        return True

    def _repo(self, repo_id: str, repo_type: str) -> Path:
        """Each repo type has its own folder, so a model and a Space with the same id never share a file."""
        return self.root / f"{repo_type}s" / repo_id

    def _ref(self, repo_id: str, repo_type: str) -> Path:
        """A repo exists once its branch points to its first commit."""
        return self._repo(repo_id, repo_type) / "refs" / BRANCH

    def create_repo(self, repo_id: str, repo_type: str = MODEL, sdk: str | None = None) -> bool:
        """Create the repo with an empty first commit, as the Hub does; False when it already exists. A Space keeps
        the `sdk` it was created with, which its info reports until a README names one."""
        with self._lock:
            if self._ref(repo_id, repo_type).is_file():
                return False
            if sdk is not None:
                _write_atomically(self._repo(repo_id, repo_type) / "sdk", sdk.encode())
            self._write_commit(repo_id, repo_type, None, "initial commit", {})
            return True

    def created_sdk(self, repo_id: str) -> str | None:
        """The SDK a Space was created with."""
        path = self._repo(repo_id, SPACE) / "sdk"
        return path.read_text() if path.is_file() else None

    def resolve(self, repo_id: str, revision: str, repo_type: str = MODEL) -> Commit:
        """The commit a branch name or a commit sha points to."""
        ref = self._ref(repo_id, repo_type)
        if not ref.is_file():
            raise HubError.repo_not_found()
        if revision == BRANCH:
            revision = ref.read_text()
        commit_file = self._repo(repo_id, repo_type) / "commits" / f"{revision}.json"
        if not _COMMIT_SHA.fullmatch(revision) or not commit_file.is_file():
            raise HubError.revision_not_found(revision)
        return Commit.load(commit_file)

    def commit(
        self, repo_id: str, title: str, change: Callable[[dict[str, Blob]], None], repo_type: str = MODEL
    ) -> Commit:
        """Apply `change` to a copy of the head's files and record the result as the new head of `main`."""
        with self._lock:
            head = self.resolve(repo_id, BRANCH, repo_type)
            files = dict(head.files)
            change(files)
            return self._write_commit(repo_id, repo_type, head.sha, title, files)

    def _write_commit(
        self, repo_id: str, repo_type: str, parent: str | None, title: str, files: dict[str, Blob]
    ) -> Commit:
        date = _now()
        listing = json.dumps([parent, title, date, time.time_ns(), sorted((n, b.git_oid) for n, b in files.items())])
        commit = Commit(_sha1(listing.encode()), parent, title, date, files)
        _write_atomically(self._repo(repo_id, repo_type) / "commits" / f"{commit.sha}.json", commit.dump())
        _write_atomically(self._ref(repo_id, repo_type), commit.sha.encode())
        return commit


def _tree_entries(files: dict[str, Blob], base: str, recursive: bool) -> list[dict[str, Any]]:
    """The `/tree` listing of the folder `base` ("" for the root), like the Hub's: folders as "directory" entries."""
    prefix = f"{base}/" if base else ""
    inside = {name[len(prefix) :]: blob for name, blob in files.items() if name.startswith(prefix)}
    folders: dict[str, list[str]] = {}
    entries = []
    for relative, blob in sorted(inside.items()):
        parts = relative.split("/")
        for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
            folders.setdefault("/".join(parts[:depth]), []).append(blob.git_oid)
        if recursive or len(parts) == 1:
            entries.append(blob.tree_entry(prefix + relative))
    directories = [
        {"type": "directory", "oid": _sha1(" ".join(oids).encode()), "size": 0, "path": prefix + folder}
        for folder, oids in sorted(folders.items())
    ]
    return directories + entries


def _delete(files: dict[str, Blob], key: str, path: str) -> None:
    """A `deletedFile` or `deletedFolder` commit line; deleting nothing is an error, with the Hub's message."""
    if key == "deletedFile":
        doomed = [path] if path in files else []
    else:
        doomed = [name for name in files if name.startswith(path.rstrip("/") + "/")]
    if not doomed:
        raise HubError.entry_not_found(None, f"A file with this name doesn't exist: {path}")
    for name in doomed:
        del files[name]


def _byte_range(header: str, size: int) -> tuple[int, int]:
    """[start, end) of a `Range: bytes=...` header; the client sends `bytes=N-` to resume a broken download."""
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        raise HubError(416, f"Unsupported range {header}", headers={"Content-Range": f"bytes */{size}"})
    first, last, suffix = match.groups()
    if suffix:
        start, end = max(size - int(suffix), 0), size
    else:
        start, end = int(first), min(int(last) + 1, size) if last else size
    if start >= end:
        raise HubError(416, f"Range {header} not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    return start, end


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Every request opens a connection (HTTP/1.0) and downloads run in parallel threads: the default backlog of 5
    # would drop connections, which the client then retries only after a second.
    request_queue_size = 64

    def __init__(self, hub: FakeHub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub


class _Handler(BaseHTTPRequestHandler):
    """One request. HTTP/1.0, so every connection closes after its answer and nothing lingers once the server stops."""

    server: _Server
    query: dict[str, str]

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: `FakeHub.requests` records what was asked instead."""

    @property
    def store(self) -> Store:
        return self.server.hub.store

    @property
    def base_url(self) -> str:
        return self.server.hub.url

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        self.server.hub.requests.append(f"{self.command} {url.path}")
        try:
            response = self._route(url.path)
        except HubError as error:
            response = error.response()
        except (KeyError, TypeError, ValueError) as error:
            response = HubError(400, f"Malformed request: {error!r}").response()
        self._send(response)

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    def _route(self, path: str) -> Response:
        for methods, pattern, handler in _ROUTES:
            match = pattern.fullmatch(path)
            if match and self.command in methods:
                # Optional parts of the path that are absent (revision, folder, repo type) take the handler's default.
                arguments = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                return handler(self, **arguments)
        raise HubError(404, f"FakeHub has no route for {self.command} {path}")

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        headers = {"Content-Length": str(len(response.body)), **response.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _json_body(self) -> Any:
        return json.loads(self._body() or b"null")

    def _require_token(self) -> None:
        """Writes need `Authorization: Bearer <anything>`; the message keeps the client from calling it RepoNotFound."""
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo_url(self, repo_id: str, repo_type: str) -> str:
        """The repo's web URL, "{endpoint}/{id}" or "{endpoint}/spaces/{id}", from which the client reads its type."""
        return f"{self.base_url}/{_URL_PREFIX[repo_type]}{repo_id}"

    def _require_branch(self, revision: str) -> None:
        if self.query.get("create_pr"):
            raise HubError(400, "FakeHub does not support pull requests")
        if revision != BRANCH:
            raise HubError.revision_not_found(revision)

    def whoami(self) -> Response:
        self._require_token()
        return _json({"type": "user", "name": USER, "fullname": USER, "orgs": []})

    def create_repo(self) -> Response:
        """Create a model or a Space. Like the Hub, refuse a Space without a valid `sdk` (the client checks that
        first, so only requests posted by hand meet this refusal) and the repo types FakeHub does not host."""
        self._require_token()
        payload = self._json_body()
        repo_type = payload.get("type") or MODEL
        if repo_type not in (MODEL, SPACE):
            raise HubError(400, f"FakeHub hosts model and space repos, not {repo_type} repos")
        sdk = payload.get("sdk") if repo_type == SPACE else None
        if repo_type == SPACE and sdk not in SPACE_SDKS:
            problem = "A space repo needs an sdk" if sdk is None else f"Invalid sdk {sdk!r}"
            raise HubError(400, f"{problem}: expected one of {', '.join(SPACE_SDKS)}")
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        url = self._repo_url(repo_id, repo_type)
        if not self.store.create_repo(repo_id, repo_type, sdk):
            return _json({"error": f"You already created this {repo_type} repo", "url": url}, 409)
        return _json({"url": url, "name": repo_id, "id": repo_id})

    def validate_yaml(self) -> Response:
        try:
            _card_data(self._json_body()["content"])
        except yaml.YAMLError as error:
            return _json({"errors": [{"message": str(error)}], "warnings": []}, 400)
        return _json({"errors": [], "warnings": []})

    def repo_info(self, repo_id: str, revision: str = BRANCH, repo_type: str = MODEL) -> Response:
        """A model or Space info. Both carry the README's metadata as `cardData`; a model also its library and task
        from there, a Space its `sdk`, which the README names on the Hub and the creation request stands in for."""
        commit = self.store.resolve(repo_id, revision, repo_type)
        readme = commit.files.get("README.md")
        card = _card_data(self.store.object_path(readme.sha256).read_text(encoding="utf-8")) if readme else {}
        if repo_type == SPACE:
            own = {"sdk": card.get("sdk") or self.store.created_sdk(repo_id)}
        else:
            own = {
                "modelId": repo_id,
                "library_name": card.get("library_name"),
                "pipeline_tag": card.get("pipeline_tag"),
            }
        return _json(
            {
                "_id": repo_id,
                "id": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit.sha,
                "lastModified": commit.date,
                "createdAt": commit.date,
                "private": False,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": card.get("tags") or [],
                **own,
                "cardData": card,
                "siblings": [blob.sibling(name) for name, blob in sorted(commit.files.items())],
            }
        )

    def tree(self, repo_id: str, revision: str, path: str = "", repo_type: str = MODEL) -> Response:
        commit = self.store.resolve(repo_id, revision, repo_type)
        base = path.strip("/")
        entries = _tree_entries(commit.files, base, self.query.get("recursive", "").lower() == "true")
        if base and not entries:
            raise HubError.entry_not_found(commit.sha, f"{base} does not exist on {revision}")
        return _json(entries)

    def preupload(self, repo_id: str, revision: str, repo_type: str = MODEL) -> Response:
        """Say which files go to LFS (large or binary) and which go inline in the commit, and what is already there."""
        self._require_token()
        self._require_branch(revision)
        head = self.store.resolve(repo_id, revision, repo_type)
        answers = []
        for file in self._json_body()["files"]:
            binary = b"\0" in base64.b64decode(file["sample"])
            existing = head.files.get(file["path"])
            answers.append(
                {
                    "path": file["path"],
                    "uploadMode": "lfs" if binary or file["size"] >= LFS_THRESHOLD else "regular",
                    "shouldIgnore": False,
                    "oid": existing.upload_oid if existing else None,
                }
            )
        return _json({"files": answers, "commitOid": head.sha})

    def lfs_batch(self, repo_id: str, repo_type: str = MODEL) -> Response:
        """git-LFS batch API, "basic" transfer only: one PUT per object that the server does not hold yet. Objects are
        stored by content for all repos; the repo only has to exist."""
        self._require_token()
        self.store.resolve(repo_id, BRANCH, repo_type)
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(400, "FakeHub only accepts LFS uploads")
        objects = [self._lfs_object(item["oid"], item["size"]) for item in payload["objects"]]
        body = {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}
        return _json(body, headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_object(self, oid: str, size: int) -> dict[str, Any]:
        """An object the server holds gets no actions, which tells the client to skip its upload."""
        answer = {"oid": oid, "size": size, "authenticated": True}
        if self.store.has_object(oid):
            return answer
        return {**answer, "actions": {"upload": {"href": f"{self.base_url}/lfs-objects/{oid}", "header": {}}}}

    def lfs_upload(self, oid: str) -> Response:
        """The PUT target handed out by `lfs_batch`. Like a presigned storage URL, the client sends it no token."""
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            raise HubError(411, "FakeHub needs a Content-Length")
        if not self.store.receive_object(oid, self.rfile, int(self.headers.get("Content-Length", 0))):
            raise HubError(400, f"Uploaded content does not match sha256 {oid}")
        return Response()

    def commit(self, repo_id: str, revision: str, repo_type: str = MODEL) -> Response:
        """Apply an ndjson commit: a header line, then `file` (inline base64), `lfsFile`, `deletedFile` and
        `deletedFolder` lines."""
        self._require_token()
        self._require_branch(revision)
        header, *operations = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if header["key"] != "header":
            raise HubError(400, "The first line of a commit must be its header")
        if unknown := {op["key"] for op in operations} - {"file", "lfsFile", "deletedFile", "deletedFolder"}:
            raise HubError(400, f"FakeHub does not support commit operations {sorted(unknown)}")
        blobs = {op["value"]["path"]: self._commit_blob(op) for op in operations if op["key"] in ("file", "lfsFile")}
        deletions = [op for op in operations if op["key"] in ("deletedFile", "deletedFolder")]

        def change(files: dict[str, Blob]) -> None:
            for deletion in deletions:
                _delete(files, deletion["key"], deletion["value"]["path"])
            files.update(blobs)

        commit = self.store.commit(repo_id, header["value"]["summary"], change, repo_type)
        url = f"{self._repo_url(repo_id, repo_type)}/commit/{commit.sha}"
        return _json({"success": True, "commitOid": commit.sha, "commitUrl": url, "pullRequestUrl": None})

    def _commit_blob(self, operation: dict[str, Any]) -> Blob:
        value = operation["value"]
        if operation["key"] == "file":
            return self.store.add_object(base64.b64decode(value["content"]))
        if not self.store.has_object(value["oid"]):
            raise HubError(400, f"LFS object {value['oid']} of {value['path']} was never uploaded")
        return Blob.large(value["oid"], self.store.object_path(value["oid"]).stat().st_size)

    def resolve(self, repo_id: str, revision: str, path: str, repo_type: str = MODEL) -> Response:
        """HEAD or GET a file. The client needs `X-Repo-Commit` and an ETag (`X-Linked-Etag` / `X-Linked-Size` for
        LFS files, whose ETag is their sha256) to place it in its cache."""
        commit = self.store.resolve(repo_id, revision, repo_type)
        blob = commit.files.get(path)
        if blob is None:
            raise HubError.entry_not_found(commit.sha)
        etag = f'"{blob.sha256 if blob.lfs else blob.git_oid}"'
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if blob.lfs:
            headers |= {"X-Linked-Etag": etag, "X-Linked-Size": str(blob.size)}
        start, end, status = 0, blob.size, 200
        if "Range" in self.headers:
            start, end = _byte_range(self.headers["Range"], blob.size)
            status, headers["Content-Range"] = 206, f"bytes {start}-{end - 1}/{blob.size}"
        headers["Content-Length"] = str(end - start)
        return Response(self._read(blob.sha256, start, end) if self.command == "GET" else b"", status, headers)

    def _read(self, sha256: str, start: int, end: int) -> bytes:
        with self.store.object_path(sha256).open("rb") as file:
            file.seek(start)
            return file.read(end - start)


_ROUTES: list[tuple[set[str], re.Pattern[str], Callable[..., Response]]] = [
    ({"GET"}, re.compile(r"/api/whoami-v2"), _Handler.whoami),
    ({"POST"}, re.compile(r"/api/repos/create"), _Handler.create_repo),
    ({"POST"}, re.compile(r"/api/validate-yaml"), _Handler.validate_yaml),
    ({"GET"}, re.compile(rf"/api/{_API_TYPE}/{_REPO}(?:/revision/{_REVISION})?"), _Handler.repo_info),
    ({"GET"}, re.compile(rf"/api/{_API_TYPE}/{_REPO}/tree/{_REVISION}(?:/(?P<path>.*))?"), _Handler.tree),
    ({"POST"}, re.compile(rf"/api/{_API_TYPE}/{_REPO}/preupload/{_REVISION}"), _Handler.preupload),
    ({"POST"}, re.compile(rf"/api/{_API_TYPE}/{_REPO}/commit/{_REVISION}"), _Handler.commit),
    ({"POST"}, re.compile(rf"/{_URL_TYPE}{_REPO}\.git/info/lfs/objects/batch"), _Handler.lfs_batch),
    ({"PUT"}, re.compile(r"/lfs-objects/(?P<oid>[0-9a-f]{64})"), _Handler.lfs_upload),
    ({"GET", "HEAD"}, re.compile(rf"/{_URL_TYPE}{_REPO}/resolve/{_REVISION}/(?P<path>.+)"), _Handler.resolve),
]


class FakeHub:
    """A Hub-compatible server on 127.0.0.1 with an OS-chosen port, serving repos stored under `root`.

    Use it as a context manager (or `start()` / `stop()`), and point client processes at it with `client_env`.
    `requests` lists every request as "METHOD /path", so tests can check which protocol paths were taken.
    """

    def __init__(self, root: Path) -> None:
        self.store = Store(Path(root))
        self.requests: list[str] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The endpoint, e.g. "http://127.0.0.1:54321", for `HF_ENDPOINT`."""
        if self._server is None:
            raise RuntimeError("FakeHub is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        if self._server is not None:
            raise RuntimeError("FakeHub is already running")
        self._server = _Server(self)
        # A short poll interval: `stop()` waits for the serving loop to notice, 0.5 s by default.
        serve = {"poll_interval": 0.05}
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs=serve, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and free the port; the repos stay on disk."""
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    def client_env(self, hf_home: Path) -> dict[str, str]:
        """Environment variables for a client process: this endpoint, a cache under `hf_home`, a token (any string
        will do), no Xet (see the module docstring) and no proxy between the client and loopback."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_HOME": str(hf_home),
            "HF_TOKEN": "fake-hub-token",
            "HF_HUB_DISABLE_XET": "1",
            "NO_PROXY": "127.0.0.1",
        }

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def client_environ(hub: FakeHub, hf_home: Path) -> dict[str, str]:
    """This environment without HF_* settings of its own (an HF_HUB_OFFLINE=1 would break the online half), plus
    the hub's."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("HF_")}
    return {**inherited, **hub.client_env(hf_home)}


def run_client(script: str, env: dict[str, str], cwd: Path, *args: str) -> dict:
    """Run `script` in a fresh interpreter (huggingface_hub reads HF_ENDPOINT when imported) and return the JSON it
    prints last."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-5000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
