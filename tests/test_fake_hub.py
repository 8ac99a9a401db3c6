"""FakeHub speaks enough of the Hub protocol for the real clients: huggingface_hub uploads (inline and through LFS),
downloads, Hub-shaped errors and the offline cache, a transformers push_to_hub / from_pretrained round trip, and Space
repos, kept apart from models with the same id.

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
from fake_hub import SPACE, FakeHub, client_environ, run_client

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


SPACE_FILES = {
    "README.md": b"---\ntitle: Demo\nsdk: gradio\napp_file: app.py\n---\n\nA demo Space.\n",
    "app.py": b'import gradio as gr\n\ngr.Interface(fn=str.upper, inputs="text", outputs="text").launch()\n',
    "requirements.txt": b"gradio\n",
    # A NUL byte makes the Hub take even a small file through LFS.
    "assets/logo.bin": bytes(range(256)),
}

# argv: the folder to upload. Creates the Space "user/demo" twice (the second answered 409, which exist_ok accepts),
# uploads the folder, and prints what the client sees of the Space: URL and type, commit, file list, the downloaded
# files, and its info through space_info and repo_info. Also whether the client itself refuses a Space without SDK.
SPACE_SCRIPT = r"""
import json
import sys
from huggingface_hub import HfApi, hf_hub_download

api = HfApi()
url = api.create_repo("user/demo", repo_type="space", space_sdk="gradio", exist_ok=True)
api.create_repo("user/demo", repo_type="space", space_sdk="gradio", exist_ok=True)
commit = api.upload_folder(folder_path=sys.argv[1], repo_id="user/demo", repo_type="space", commit_message="Add app")
files = api.list_repo_files("user/demo", repo_type="space")
info = api.space_info("user/demo")
try:
    api.create_repo("user/no-sdk", repo_type="space")
    no_sdk = None
except ValueError as error:
    no_sdk = str(error)
print(json.dumps({
    "url": url,
    "repo_type": url.repo_type,
    "commit": commit.oid,
    "commit_url": commit.commit_url,
    "files": files,
    "downloads": {name: hf_hub_download("user/demo", name, repo_type="space") for name in files},
    "sdk": info.sdk,
    "sha": info.sha,
    "siblings": sorted(sibling.rfilename for sibling in info.siblings),
    "repo_info_sdk": api.repo_info("user/demo", repo_type="space").sdk,
    "no_sdk": no_sdk,
}))
"""

# A model and a Space both called "user/twin", each given its own notes.txt. Prints, per repo type, its files, the
# downloaded notes and the info's sdk (the Space has no README, so the SDK it was created with).
TWIN_SCRIPT = r"""
import json
from pathlib import Path
from huggingface_hub import HfApi, hf_hub_download

api = HfApi()
api.create_repo("user/twin", repo_type="space", space_sdk="docker")
api.create_repo("user/twin")  # a 409 here, if the Space took the id, would raise
result = {}
for repo_type in ("space", "model"):
    api.upload_file(path_or_fileobj=f"{repo_type} notes".encode(), path_in_repo="notes.txt", repo_id="user/twin",
                    repo_type=repo_type)
for repo_type in ("space", "model"):
    result[repo_type] = {
        "files": api.list_repo_files("user/twin", repo_type=repo_type),
        "notes": Path(hf_hub_download("user/twin", "notes.txt", repo_type=repo_type)).read_text(),
        "sdk": getattr(api.repo_info("user/twin", repo_type=repo_type), "sdk", None),
    }
print(json.dumps(result))
"""


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
    write_files(folder, {**files, **doomed})
    return files


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)


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


def request(
    hub: FakeHub, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    url = urlsplit(hub.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
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
    status, headers, content = request(hub, "GET", "/user/digits/resolve/main/digits.txt", {"Range": byte_range})
    assert (status, headers["Content-Range"], headers["X-Repo-Commit"], content) == (206, content_range, commit, body)


def test_resolve_refuses_a_range_past_the_end(hub: FakeHub) -> None:
    commit_digits(hub)
    status, headers, _ = request(hub, "GET", "/user/digits/resolve/main/digits.txt", {"Range": "bytes=10-"})
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
        status, headers, _ = request(hub, "GET", path, {})
        assert (status, headers.get("X-Error-Code"), headers.get("X-Repo-Commit")) == (404, code, commit), path


@pytest.mark.slow
def test_space_upload_list_download_and_info(hub: FakeHub, tmp_path: Path) -> None:
    write_files(tmp_path / "space", SPACE_FILES)
    space = run_client(SPACE_SCRIPT, client_environ(hub, tmp_path / "home"), tmp_path, str(tmp_path / "space"))
    assert (space["url"], space["repo_type"]) == (f"{hub.url}/spaces/user/demo", SPACE)
    assert space["commit_url"] == f"{hub.url}/spaces/user/demo/commit/{space['commit']}"
    assert sorted(space["files"]) == space["siblings"] == sorted(SPACE_FILES)
    assert read_files(space["downloads"]) == SPACE_FILES
    assert "/hub/spaces--user--demo/snapshots/" in Path(space["downloads"]["app.py"]).as_posix()
    assert space["sdk"] == space["repo_info_sdk"] == "gradio"
    assert space["sha"] == space["commit"] == hub.store.resolve("user/demo", "main", SPACE).sha
    assert space["no_sdk"] and "space_sdk" in space["no_sdk"]
    logo = hashlib.sha256(SPACE_FILES["assets/logo.bin"]).hexdigest()
    for line in [
        "POST /api/spaces/user/demo/preupload/main",
        "POST /spaces/user/demo.git/info/lfs/objects/batch",
        f"PUT /lfs-objects/{logo}",
        "POST /api/spaces/user/demo/commit/main",
        "GET /api/spaces/user/demo/tree/main",
        "GET /api/spaces/user/demo",
        "HEAD /spaces/user/demo/resolve/main/app.py",
    ]:
        assert line in hub.requests, line
    assert not [line for line in hub.requests if "/models/" in line], "nothing went to a model repo"


@pytest.mark.slow
def test_a_model_and_a_space_with_one_id_stay_apart(hub: FakeHub, tmp_path: Path) -> None:
    twins = run_client(TWIN_SCRIPT, client_environ(hub, tmp_path / "home"), tmp_path)
    assert twins == {
        "space": {"files": ["notes.txt"], "notes": "space notes", "sdk": "docker"},
        "model": {"files": ["notes.txt"], "notes": "model notes", "sdk": None},
    }


def test_create_repo_refuses_a_space_without_sdk_and_datasets(hub: FakeHub) -> None:
    headers = {"Authorization": "Bearer fake-hub-token", "Content-Type": "application/json"}
    cases = {
        "no-sdk": ({"type": "space"}, "A space repo needs an sdk"),
        "bad-sdk": ({"type": "space", "sdk": "jupyter"}, "Invalid sdk 'jupyter'"),
        "data": ({"type": "dataset"}, "not dataset repos"),
    }
    for name, (payload, message) in cases.items():
        body = json.dumps({"name": name, "organization": None, **payload}).encode()
        status, answer, _ = request(hub, "POST", "/api/repos/create", headers, body)
        assert (status, message in answer["X-Error-Message"]) == (400, True), name
        status, answer, _ = request(hub, "GET", f"/api/spaces/user/{name}", {})
        assert (status, answer.get("X-Error-Code")) == (404, "RepoNotFound"), name
