"""The benchmark script runs end to end on a small model and writes its JSON, table and chart (it is measured by hand,
never timed in CI: this only keeps the machinery working)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.mark.slow
def test_benchmark_script_writes_its_reports(tmp_path: Path) -> None:
    arguments = [
        "--resolution",
        "64",
        "--window",
        "4",
        "--batch-sizes",
        "1",
        "2",
        "--dtypes",
        "float32",
        "bfloat16-weights",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--output-dir",
        str(tmp_path),
    ]
    done = subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    written = sorted(path.name for path in tmp_path.iterdir())
    assert len(written) == 3 and {Path(name).suffix for name in written} == {".json", ".md", ".png"}
    kind = Path(written[0]).stem
    results = json.loads((tmp_path / f"{kind}.json").read_text())
    assert kind.startswith(results["cpu"]["vendor"]) and "AVX2" in results["cpu"]["features"]
    assert results["max_logit_difference"] < 1e-4
    scenarios = [row["scenario"] for row in results["rows"]]
    assert scenarios == [
        "inference float32 batch 1",
        "inference float32 batch 2",
        "inference bfloat16-weights batch 1",
        "inference bfloat16-weights batch 2",
        "training step float32 batch 2",
    ]
    assert all(row["transformers_ms"] > 0 and row["swinv2_hf_ms"] > 0 for row in results["rows"])
    assert all(results["peak_training_memory_mib"][name] > 0 for name in ("transformers", "swinv2_hf"))
    assert set(results["matmul_ceiling_gflops"]) == {"torch.mm", "oneDNN"}
    assert "| scenario |" in (tmp_path / f"{kind}.md").read_text()
    assert (tmp_path / f"{kind}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_deployment_benchmark_writes_its_reports(tmp_path: Path) -> None:
    """benchmarks/deployment.py: transformers eager, ours eager, ONNX Runtime float32 and int8 at each batch size,
    with the exported graphs' checked differences."""
    arguments = [
        "--resolution",
        "64",
        "--window",
        "4",
        "--batch-sizes",
        "1",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--output-dir",
        str(tmp_path),
    ]
    done = subprocess.run(
        [sys.executable, str(SCRIPT.with_name("deployment.py")), *arguments],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (report,) = tmp_path.glob("*-deployment.json")
    results = json.loads(report.read_text())
    contenders = ["transformers eager float32", "swinv2_hf eager float32", "ONNX Runtime float32", "ONNX Runtime int8"]
    assert [(row["batch"], row["contender"]) for row in results["rows"]] == [(b, c) for b in (1, 2) for c in contenders]
    assert all(row["ms"] > 0 for row in results["rows"])
    assert results["max_difference_to_pytorch"]["ONNX Runtime float32"] < 1e-4
    assert "| batch | contender |" in report.with_suffix(".md").read_text()
