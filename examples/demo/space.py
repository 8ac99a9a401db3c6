"""A Hub Space folder for a model repository: the demo app as it is, the packages it needs, and the front matter that
tells the Hub to run it with Gradio.

    swinv2-hf space --model swinv2-hf/swinv2_tiny_patch4_window8_256 --output tiny-space [--push user/tiny-demo]

The app loads the model through `trust_remote_code` (the repository carries its code), so the Space needs neither
swinv2_hf nor a GPU.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from swinv2_hf import atomic_directory, push_folder

APP = Path(__file__).with_name("app.py")
SETTINGS_FILE = "space.json"  # read by app.py: the model it shows
RUNTIME = ("torch", "transformers")  # what app.py needs of swinv2_hf's own requirements; the model brings its code


def requirements() -> list[str]:
    """What app.py imports, in the ranges this package declares (setup.py's install_requires and `demo` extra), less
    Gradio, which the Space's `sdk_version` installs."""
    kept = []
    for line in metadata.requires("swinv2_hf") or []:
        requirement = Requirement(line)
        runtime = requirement.marker is None and requirement.name in RUNTIME
        demo = requirement.marker is not None and requirement.marker.evaluate({"extra": "demo"})
        if (runtime or demo) and requirement.name != "gradio":
            kept.append(str(Requirement(f"{requirement.name}{requirement.specifier}")))
    return kept


def gradio_version() -> str:
    """The Gradio this demo runs with here: the Space's `sdk_version`, so the Hub starts the same one."""
    try:
        return metadata.version("gradio")
    except metadata.PackageNotFoundError as error:
        raise ValueError(
            "Gradio is not installed: pip install -e '.[demo]' (the Space runs the version used here)."
        ) from error


def space_readme(model: str, sdk_version: str) -> str:
    title = model.rsplit("/", 1)[-1]
    front_matter = "\n".join(
        [
            "---",
            f"title: {json.dumps(title[:60])}",
            "emoji: 🔭",
            "colorFrom: indigo",
            "colorTo: blue",
            "sdk: gradio",
            f"sdk_version: {sdk_version}",
            "app_file: app.py",
            "pinned: false",
            "models:",
            f"  - {model}",
            "---",
        ]
    )
    return (
        f"{front_matter}\n\n# SwinV2: {title}\n\n"
        f"A demo of [{model}](https://huggingface.co/{model}): what the model predicts, and inside SwinV2 the "
        "continuous position bias of every head (at the trained window and stretched to a larger one, as at "
        "transfer), the attention in the window under a clicked pixel, the stages' feature maps and each head's "
        "learned logit scale.\n"
    )


def write_space(model: str, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the Space folder for the Hub repository `model` at `output`: complete or absent, even when killed."""
    files = {
        "README.md": space_readme(model, gradio_version()),
        "requirements.txt": "\n".join(requirements()) + "\n",
        SETTINGS_FILE: json.dumps({"model": model}, indent=2) + "\n",
    }
    with atomic_directory(Path(output), overwrite=overwrite) as folder:
        shutil.copyfile(APP, folder / "app.py")
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
    return Path(output)


def push_space(folder: str | os.PathLike, space_id: str) -> str:
    """Upload a Space folder (the Space is created with the Gradio SDK when missing); returns its URL."""
    return push_folder(Path(folder), space_id, repo_type="space", space_sdk="gradio", commit_message="Upload demo")
