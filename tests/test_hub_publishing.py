"""`swinv2-hf convert --push-to-hub` against a Hub on loopback (tests/fake_hub.py): the repository holds a complete
folder that loads with plain transformers (`trust_remote_code=True`, swinv2_hf unimportable), serves a pipeline by repo
id, runs its model card's snippet, and keeps working from the cache with HF_HUB_OFFLINE=1 after the server stops."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BLOCK_SWINV2, FIXTURES
from fake_hub import FakeHub, client_environ, run_client
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline

from swinv2_hf.model_card import SAMPLE_IMAGE_URL

REPO_ID = "user/swinv2-case-c"
EXPECTED_FILES = [
    "README.md",
    "config.json",
    "configuration_swinv2_hf.py",
    "kernels.py",
    "model.safetensors",
    "modeling_swinv2_hf.py",
    "preprocessor_config.json",
]

# argv: the work folder, "online" or "offline". Blocks swinv2_hf, then loads the pushed repository by id and reports
# the files, the logits on input.pt, a pipeline's predictions on image.png and (online) what the card's snippet
# printed.
CLIENT_SCRIPT = (
    BLOCK_SWINV2
    + r"""
import contextlib
import io
import json
import os
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from transformers import AutoModelForImageClassification, pipeline

work, mode = Path(sys.argv[1]), sys.argv[2]
repo_id = "REPO_ID"
folder = snapshot_download(repo_id)
model = AutoModelForImageClassification.from_pretrained(repo_id, trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(torch.load(work / "input.pt", weights_only=True)).logits
# Online the task comes from the card's pipeline_tag; offline transformers cannot ask the Hub, so it is named.
task = None if mode == "online" else "image-classification"
classifier = pipeline(task, model=repo_id, trust_remote_code=True)
result = {
    "files": sorted(os.listdir(folder)),
    "logits": logits.tolist(),
    "task": classifier.task,
    "predictions": classifier(str(work / "image.png"), top_k=3),
}
if mode == "online":
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec((work / "snippet.py").read_text(), {})
    result["snippet_output"] = printed.getvalue()
print(json.dumps(result))
""".replace("REPO_ID", REPO_ID)
)


def card_snippet(readme: str, image: Path) -> str:
    """The card's first Python block, on a local image instead of the sample URL (pipelines take either)."""
    snippet = re.search(r"```python\n(.*?)```", readme, re.DOTALL)[1]
    assert SAMPLE_IMAGE_URL in snippet and REPO_ID in snippet
    return snippet.replace(SAMPLE_IMAGE_URL, str(image))


@pytest.mark.slow
def test_push_then_load_by_repo_id_online_and_offline(hub: FakeHub, tmp_path: Path) -> None:
    env = client_environ(hub, tmp_path / "home")
    classes = tmp_path / "classes.txt"
    classes.write_text("".join(f"class_{i}\n" for i in range(10)))
    output = tmp_path / "converted"
    pushed = subprocess.run(
        [
            shutil.which("swinv2-hf") or "swinv2-hf",
            "convert",
            "--source",
            "original",
            "--checkpoint",
            str(FIXTURES / "case_C_ms.pth"),
            "--config",
            str(FIXTURES / "case_C_config.json"),
            "--id2label",
            str(classes),
            "--output-dir",
            str(output),
            "--push-to-hub",
            REPO_ID,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert f"pushed:           {hub.url}/{REPO_ID}" in pushed.stdout

    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(image)
    pixels = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    torch.save(pixels, tmp_path / "input.pt")
    (tmp_path / "snippet.py").write_text(card_snippet((output / "README.md").read_text(), image))
    local = AutoModelForImageClassification.from_pretrained(output).eval()
    with torch.no_grad():
        expected_logits = local(pixels).logits
    expected_predictions = pipeline("image-classification", model=str(output))(str(image), top_k=3)

    online = run_client(CLIENT_SCRIPT, env, tmp_path, str(tmp_path), "online")
    hub.stop()
    offline = run_client(CLIENT_SCRIPT, {**env, "HF_HUB_OFFLINE": "1"}, tmp_path, str(tmp_path), "offline")
    for result in (online, offline):
        assert result["files"] == EXPECTED_FILES
        torch.testing.assert_close(torch.tensor(result["logits"]), expected_logits, rtol=0, atol=1e-6)
        assert result["task"] == "image-classification"
        assert [p["label"] for p in result["predictions"]] == [p["label"] for p in expected_predictions]
    assert "class_" in online["snippet_output"] and "'score'" in online["snippet_output"]
    assert json.loads((output / "config.json").read_text())["id2label"]["3"] == "class_3"
