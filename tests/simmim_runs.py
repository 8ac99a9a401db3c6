"""Runs of examples/simmim/run_simmim.py for the tests: in one process, under torchrun or under `accelerate launch`
with a config of examples/accelerate_configs/, on the tiny tester config."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "simmim" / "run_simmim.py"
ACCELERATE_CONFIGS = ROOT / "examples" / "accelerate_configs"
RUN_TIMEOUT_S = 600


def load_script() -> ModuleType:
    """run_simmim.py as a module, for the tests of its parts."""
    spec = importlib.util.spec_from_file_location("run_simmim", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def write_tiny_config(folder: Path) -> Path:
    """The tiny tester as a SimMIM config (three stages of patch 2: encoder stride 8); no stochastic depth, so that
    runs split over processes draw no random numbers of their own."""
    path = folder / "tiny_config.json"
    tiny_config(encoder_stride=8, drop_path_rate=0.0).to_json_file(path)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(processes: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]


def accelerate_launch(config: str, processes: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE_CONFIGS / config),
        "--num_processes",
        str(processes),
        "--main_process_port",
        str(free_port()),
    ]


def run_simmim(arguments: list[str], launcher: list[str] | None = None) -> str:
    """Run the script (from the repository root, as the configs expect) and return its output; a failure shows
    the end of it."""
    command = [*(launcher or [sys.executable]), str(SCRIPT), *map(str, arguments)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output[-6000:]}"
    return output


def results(output_dir: Path) -> dict:
    return json.loads((output_dir / "results.json").read_text())
