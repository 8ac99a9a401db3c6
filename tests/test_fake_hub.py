"""FakeHub speaks enough of the Hub protocol for the real clients: huggingface_hub uploads (inline and through LFS),
downloads, Hub-shaped errors and the offline cache, and a transformers push_to_hub / from_pretrained round trip.

Clients run in fresh interpreters because huggingface_hub reads HF_ENDPOINT when it is imported."""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fake_hub import FakeHub, client_environ, run_client

NEW_NOTES = "second version\n"
LARGE_SIZE = 10 * 1024 * 1024 + 12345

# argv: the folder to upload, then the new content of notes.txt. Three commits: the folder, notes.txt changed, and
# obsolete.txt and the old/ folder deleted. Prints the user and the commits.
UPLOAD_SCRIPT = r"""
import json
import sys
from huggingface_hub import CommitOperationDelete, HfApi

api = HfApi()
api.create_repo("user/demo", exist_ok=True)
api.create_repo("user/demo", exist_ok=True)  # answered 409, which exist_ok accepts
commits = [
    api.upload_folder(repo_id="user/demo", folder_path=sys.argv[1]),
    api.upload_file(path_or_fileobj=sys.argv[2].encode(), path_in_repo="notes.txt", repo_id="user/demo"),
    api.create_commit(
        "user/demo",
        [CommitOperationDelete("obsolete.txt"), CommitOperationDelete("old/")],
        commit_message="Delete obsolete files",
    ),
]
print(json.dumps({"user": api.whoami()["name"], "commits": [commit.oid for commit in commits]}))
"""

# argv: the JSON list of file names, then "online" or "offline". Prints the snapshot folder, the path of each file
# downloaded on its own and, online, whether a missing file and a missing repo raise the Hub client's errors.
DOWNLOAD_SCRIPT = r"""
import json
import sys
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError


def raises(kind, call):
    try:
        call()
    except kind:
        return True
    return False


result = {
    "snapshot": snapshot_download("user/demo"),
    "files": {name: hf_hub_download("user/demo", name) for name in json.loads(sys.argv[1])},
}
if sys.argv[2] == "online":
    result["missing_file"] = raises(EntryNotFoundError, lambda: hf_hub_download("user/demo", "missing.txt"))
    result["missing_repo"] = raises(RepositoryNotFoundError, lambda: hf_hub_download("user/absent", "config.json"))
print(json.dumps(result))
"""

FINGERPRINT = r"""
import hashlib
import json
import torch
from transformers import AutoModel, BertConfig, BertModel


def fingerprint(model):
    tensors = model.state_dict().items()
    return {name: hashlib.sha256(tensor.numpy().tobytes()).hexdigest() for name, tensor in tensors}
"""
# Also prints the library the Hub reads from the model card that push_to_hub writes.
PUSH_SCRIPT = (
    FINGERPRINT
    + r"""
from huggingface_hub import model_info

torch.manual_seed(0)
model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37))
model.push_to_hub("user/bert")
print(json.dumps({"library": model_info("user/bert").library_name, "fingerprint": fingerprint(model)}))
"""
)
LOAD_SCRIPT = (
    FINGERPRINT
    + r"""
print(json.dumps(fingerprint(AutoModel.from_pretrained("user/bert"))))
"""
)


def write_folder(folder: Path) -> dict[str, bytes]:
    """A text file, a JSON file, a file in a subfolder, a binary file over 10 MB (which has to go through LFS), and
    the files that the third commit deletes. Returns the files that stay."""
    files = {
        "notes.txt": b"first version\n",
        "config.json": json.dumps({"hidden_size": 32}).encode(),
        "sub/nested.txt": b"in a subfolder\n",
        "weights.bin": random.Random(0).randbytes(LARGE_SIZE),
    }
    doomed = {"obsolete.txt": b"deleted later\n", "old/stale.txt": b"deleted with its folder\n"}
    for name, content in {**files, **doomed}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return files


def read_folder(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def read_files(paths: dict[str, str]) -> dict[str, bytes]:
    return {name: Path(path).read_bytes() for name, path in paths.items()}


@pytest.mark.slow
def test_upload_download_errors_and_offline_cache(hub: FakeHub, tmp_path: Path) -> None:
    files = write_folder(tmp_path / "folder")
    env = client_environ(hub, tmp_path / "home")
    pushed = run_client(UPLOAD_SCRIPT, env, tmp_path, str(tmp_path / "folder"), NEW_NOTES)
    commits = pushed["commits"]
    assert pushed["user"] == "user"
    assert len(set(commits)) == 3 and all(re.fullmatch(r"[0-9a-f]{40}", sha) for sha in commits)
    large_sha256 = hashlib.sha256(files["weights.bin"]).hexdigest()
    assert [line for line in hub.requests if line.startswith("PUT")] == [f"PUT /lfs-objects/{large_sha256}"]
    assert not [line for line in hub.requests if "xet" in line.lower()]

    expected = {**files, "notes.txt": NEW_NOTES.encode()}
    online = run_client(DOWNLOAD_SCRIPT, env, tmp_path, json.dumps(sorted(files)), "online")
    assert Path(online["snapshot"]).name == commits[-1]
    assert read_folder(Path(online["snapshot"])) == expected
    assert read_files(online["files"]) == expected
    assert Path(online["files"]["weights.bin"]).resolve().name == large_sha256, "LFS files are cached by sha256"
    assert online["missing_file"] and online["missing_repo"]
    assert (tmp_path / "home/hub/models--user--demo/.no_exist" / commits[-1] / "missing.txt").exists()

    hub.stop()
    offline_env = {**env, "HF_HUB_OFFLINE": "1"}
    offline = run_client(DOWNLOAD_SCRIPT, offline_env, tmp_path, json.dumps(sorted(files)), "offline")
    assert offline["snapshot"] == online["snapshot"]
    assert read_folder(Path(offline["snapshot"])) == expected
    assert read_files(offline["files"]) == expected


@pytest.mark.slow
def test_transformers_push_to_hub_then_from_pretrained_online_and_offline(hub: FakeHub, tmp_path: Path) -> None:
    env = client_environ(hub, tmp_path / "home")
    pushed = run_client(PUSH_SCRIPT, env, tmp_path)
    assert pushed["library"] == "transformers"
    assert run_client(LOAD_SCRIPT, env, tmp_path) == pushed["fingerprint"]
    hub.stop()
    assert run_client(LOAD_SCRIPT, {**env, "HF_HUB_OFFLINE": "1"}, tmp_path) == pushed["fingerprint"]


def get(hub: FakeHub, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    url = urlsplit(hub.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def commit_digits(hub: FakeHub) -> str:
    """A repo "user/digits" holding digits.txt = b"0123456789", committed through the store; returns the commit."""
    hub.store.create_repo("user/digits")
    digits = hub.store.add_object(b"0123456789")
    return hub.store.commit("user/digits", "add digits", lambda files: files.update({"digits.txt": digits})).sha


@pytest.mark.parametrize(
    ("byte_range", "content_range", "body"),
    [
        ("bytes=4-", "bytes 4-9/10", b"456789"),
        ("bytes=2-3", "bytes 2-3/10", b"23"),
        ("bytes=-3", "bytes 7-9/10", b"789"),
    ],
)
def test_resolve_honours_range_for_resumed_downloads(
    hub: FakeHub, byte_range: str, content_range: str, body: bytes
) -> None:
    commit = commit_digits(hub)
    status, headers, content = get(hub, "/user/digits/resolve/main/digits.txt", {"Range": byte_range})
    assert (status, headers["Content-Range"], headers["X-Repo-Commit"], content) == (206, content_range, commit, body)


def test_resolve_refuses_a_range_past_the_end(hub: FakeHub) -> None:
    commit_digits(hub)
    status, headers, _ = get(hub, "/user/digits/resolve/main/digits.txt", {"Range": "bytes=10-"})
    assert (status, headers["Content-Range"]) == (416, "bytes */10")


def test_missing_things_answer_like_the_hub(hub: FakeHub) -> None:
    hub.store.create_repo("user/empty")
    head = hub.store.resolve("user/empty", "main").sha
    cases = {
        "/user/absent/resolve/main/config.json": ("RepoNotFound", None),
        "/user/empty/resolve/main/config.json": ("EntryNotFound", head),
        "/user/empty/resolve/0000000000000000000000000000000000000000/config.json": ("RevisionNotFound", None),
        "/api/models/user/empty/tree/main/additional_chat_templates": ("EntryNotFound", head),
    }
    for path, (code, commit) in cases.items():
        status, headers, _ = get(hub, path, {})
        assert (status, headers.get("X-Error-Code"), headers.get("X-Repo-Commit")) == (404, code, commit), path
