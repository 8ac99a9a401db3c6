"""The README main job's digits model, deployed: exported to ONNX with int8 weights (checked against PyTorch before it
is written), then run in ONNX Runtime on a held-out test digit, with only onnxruntime, numpy and the saved image
processor at inference time.

    python examples/image_classification/run_classification.py      # the main job: writes outputs/digits/model
    python examples/deployment/run_onnx_int8.py [--model-dir outputs/digits/model] [--output PATH] [--index 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime
from transformers import AutoImageProcessor

from swinv2_hf import check_size, export, load_model_folder, read_size_range
from swinv2_hf_examples import classification as common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("outputs/digits/model"), help="a swinv2_hf classifier")
    parser.add_argument("--output", type=Path, help="the int8 ONNX file (default: beside the model folder)")
    parser.add_argument("--index", type=int, default=0, help="which held-out test digit to classify")
    return parser.parse_args(argv)


def classify(graph: Path, model_dir: Path, image) -> list[tuple[str, float]]:
    """Top-3 (label, probability) of ONNX Runtime on `image`, preprocessed by the folder's own image processor."""
    pixel_values = AutoImageProcessor.from_pretrained(model_dir)(image, return_tensors="np")["pixel_values"]
    check_size(read_size_range(graph), *pixel_values.shape[2:])
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"pixel_values": pixel_values.astype(np.float32)})[0][0]
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    id2label = json.loads((model_dir / "config.json").read_text())["id2label"]
    return [(id2label[str(index)], float(probabilities[index])) for index in np.argsort(-probabilities)[:3]]


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    args = parse_args(argv)
    graph = args.output or args.model_dir.parent / "model-int8.onnx"
    if not graph.exists():
        report = export(
            load_model_folder(args.model_dir),
            graph,
            to="onnx",
            exporter="torchscript",
            dynamic=True,
            quantize="int8",
            inputs=[args.model_dir],
        )
        print(f"wrote {report.summary()}")
    data = common.load_data(common.DataArguments())
    example = data.splits["test"][args.index]
    top = classify(graph, args.model_dir, common.open_image(example[data.image_column]))
    print(
        f"ONNX Runtime int8 on held-out test digit {args.index}: "
        + ", ".join(f"{label!r} {probability:.3f}" for label, probability in top)
        + f"; true label {data.labels[example[data.label_column]]!r}"
    )
    return top


if __name__ == "__main__":
    main()
