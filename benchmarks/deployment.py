"""Deployed SwinV2 against transformers' Swinv2 in PyTorch float32 eager, on the same weights, timed interleaved.

Contenders, each at every batch size: transformers eager float32 (the baseline), swinv2_hf eager float32, the ONNX
graph in ONNX Runtime (float32) and its int8 version (onnxruntime's dynamic quantization), both written by
`swinv2_hf.deployment.export`, which checks them against the PyTorch model first. ONNX Runtime gets the same number of
threads as PyTorch. Writes `<cpu kind>-deployment.{json,md}` next to run.py's results.

    python benchmarks/deployment.py [--size tiny] [--resolution 256] [--window 8] [--batch-sizes 1 8] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import onnxruntime
import torch
from run import add_common_arguments, build_models, cpu_description, cpu_kind
from timing import interleaved, paired_ratios

from swinv2_hf.deployment import export

BASELINE = "transformers eager float32"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    return parser.parse_args(argv, namespace=argparse.Namespace(device="cpu"))


def onnx_session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def exported_graphs(model: torch.nn.Module, folder: Path) -> tuple[dict, dict]:
    """ONNX Runtime sessions of the float32 and int8 graphs, and each graph's checked difference to PyTorch."""
    reports = {
        "ONNX Runtime float32": export(model, folder / "model.onnx", exporter="torchscript"),
        "ONNX Runtime int8": export(model, folder / "int8.onnx", exporter="torchscript", quantize="int8"),
    }
    sessions = {name: onnx_session(Path(report.path)) for name, report in reports.items()}
    return sessions, {name: report.max_difference for name, report in reports.items()}


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    models = {name: model.eval() for name, model in build_models(args).items()}
    rows = []
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        sessions, differences = exported_graphs(models["swinv2_hf"], Path(folder))
        for batch in args.batch_sizes:
            pixels = torch.randn(batch, 3, args.resolution, args.resolution)
            calls = {
                BASELINE: lambda pixels=pixels: models["transformers"](pixels),
                "swinv2_hf eager float32": lambda pixels=pixels: models["swinv2_hf"](pixels),
            }
            calls.update(
                {
                    name: (lambda session=session, pixels=pixels: session.run(None, {"pixel_values": pixels.numpy()}))
                    for name, session in sessions.items()
                }
            )
            timings = interleaved(calls, args.repeats, args.warmup, torch.device("cpu"))
            for name, timing in timings.items():
                speedup, low, high = paired_ratios(timings[BASELINE], timing)
                rows.append(
                    {
                        "batch": batch,
                        "contender": name,
                        "ms": round(timing.median, 2),
                        "range": f"{min(timing.values):.1f}-{max(timing.values):.1f}",
                        "speedup": round(speedup, 3),
                        "speedup_range": f"{low:.2f}-{high:.2f}",
                    }
                )
    cpu = cpu_description()
    results = {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "size": args.size,
        "resolution": args.resolution,
        "window": args.window,
        "max_difference_to_pytorch": differences,
        "rows": rows,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    kind = cpu_kind(cpu)
    (args.output_dir / f"{kind}-deployment.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"SwinV2-{args.size[0].upper()} {args.resolution}px window {args.window} on {cpu['name']} "
        f"({', '.join(cpu['features'])}), {torch.get_num_threads()} threads, torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}; medians of interleaved runs (min-max); speed-up over {BASELINE} (range over the "
        f"interleaved pairs). Largest difference of the graphs to PyTorch float32, relative to the outputs' magnitude: "
        + ", ".join(f"{name} {value:.1e}" for name, value in differences.items())
        + ".",
        "",
        "| batch | contender | time | speed-up |",
        "|---|---|---|---|",
        *(
            f"| {r['batch']} | {r['contender']} | {r['ms']} ms ({r['range']}) "
            f"| {r['speedup']:.2f}x ({r['speedup_range']}) |"
            for r in rows
        ),
    ]
    (args.output_dir / f"{kind}-deployment.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
