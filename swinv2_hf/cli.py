"""`swinv2-hf`: the command line of the package.

    swinv2-hf convert --source {original,timm,transformers} --checkpoint PATH --output-dir DIR [--model-name NAME]
                      [--config YAML_OR_JSON] [--id2label FILE] [--push-to-hub REPO_ID] [--overwrite] [--no-verify]
    swinv2-hf export --model-dir DIR --to {original,timm,transformers} --output PATH [--overwrite]
    swinv2-hf export --model-dir DIR --to {onnx,torch-export,torchscript} --output PATH [--dynamic-axes] [--opset N]
                     [--quantize int8] [--exporter {dynamo,torchscript}] [--height H] [--width W] [--overwrite]
    swinv2-hf space --model REPO_ID --output DIR [--push SPACE_ID] [--overwrite]

Bad input (an unknown name, a checkpoint that does not fit, an existing output) ends with a one-line error and exit
status 2, with nothing written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from swinv2_hf_demo.space import push_space, write_space

from . import deployment
from .conversion import SOURCES
from .hub_folder import DEFAULT_MAX_SHARD_SIZE, convert_checkpoint, export_folder

BAD_INPUT = 2


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="a checkpoint of the original, timm or transformers -> a verified, Hub-ready swinv2_hf folder",
        description="Convert a SwinV2 checkpoint into a folder AutoModel.from_pretrained loads, check it against "
        "transformers' Swinv2 on the same weights, and write config, safetensors, image processor, remote code and "
        "model card.",
    )
    parser.add_argument("--source", required=True, choices=SOURCES, help="the checkpoint's implementation")
    parser.add_argument(
        "--checkpoint", required=True, help="a .pth/.bin/.safetensors file, or a timm/transformers folder"
    )
    parser.add_argument("--output-dir", required=True, help="the folder to write (must not exist without --overwrite)")
    parser.add_argument("--model-name", help="a release name (swinv2_tiny_patch4_window8_256, ...) or timm variant")
    parser.add_argument(
        "--config",
        help="the original repository's YAML, or a JSON config (ours, transformers', or "
        "the original constructor arguments)",
    )
    parser.add_argument("--id2label", help="class names: a JSON mapping or a text file with one name per line")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the folder to this Hub repository")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--no-verify", action="store_true", help="write even if the outputs differ from the reference")
    parser.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE, help="safetensors shard size")


def _add_output(parser: argparse.ArgumentParser, what: str) -> None:
    """--output and --overwrite, which every command that writes one output takes."""
    parser.add_argument("--output", required=True, help=f"{what} (must not exist without --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="a swinv2_hf folder -> the original (.pth), timm or transformers layout, or an ONNX / torch.export / "
        "TorchScript graph",
        description="Write a swinv2_hf model in another implementation's layout (original -> swinv2_hf -> original "
        "and timm round trips are bit-exact), or as a graph that runs without this package, checked against the "
        "PyTorch model on several sizes and batch sizes before it is written.",
    )
    parser.add_argument("--model-dir", required=True, help="a folder saved by swinv2_hf (or converted by it)")
    parser.add_argument("--to", required=True, choices=(*SOURCES, *deployment.FORMATS), help="what to write")
    _add_output(parser, "a .pth file (original), a folder (timm, transformers) or the graph file (.onnx, .pt2, .pt)")
    graphs = parser.add_argument_group("graphs (onnx, torch-export, torchscript)")
    graphs.add_argument(
        "--dynamic-axes",
        action="store_true",
        help="dynamic height and width (the batch is always "
        "dynamic), over the range of sizes that keeps every stage's windows; printed and stored",
    )
    graphs.add_argument("--height", type=int, help="example height in pixels (default: config.image_size)")
    graphs.add_argument("--width", type=int, help="example width in pixels (default: config.image_size)")
    graphs.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    graphs.add_argument("--exporter", choices=deployment.ONNX_EXPORTERS, default="dynamo", help="the ONNX exporter")
    graphs.add_argument(
        "--quantize", choices=["int8"], help="dynamic int8: onnxruntime's (onnx) or torch.ao's (torchscript)"
    )


def _add_space(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "space",
        help="a Hub Space folder (Gradio) that demonstrates a model repository",
        description="Write a Space folder with the demo app (examples/demo/app.py), its requirements and the front "
        "matter that makes the Hub run it with Gradio, for a model repository on the Hub; optionally upload it.",
    )
    parser.add_argument("--model", required=True, help="the model repository the Space shows (user/name)")
    _add_output(parser, "the folder to write")
    parser.add_argument("--push", metavar="SPACE_ID", help="also upload the folder to this Space (user/name)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swinv2-hf", description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_convert(subparsers)
    _add_export(subparsers)
    _add_space(subparsers)
    return parser


def run(args: argparse.Namespace) -> None:
    if args.command == "convert":
        convert_checkpoint(
            args.source,
            args.checkpoint,
            args.output_dir,
            model_name=args.model_name,
            config_path=args.config,
            id2label_path=args.id2label,
            push_to_hub=args.push_to_hub,
            overwrite=args.overwrite,
            check=not args.no_verify,
            max_shard_size=args.max_shard_size,
        )
    elif args.command == "space":
        folder = write_space(args.model, args.output, overwrite=args.overwrite)
        print(f"written: {folder}")
        if args.push:
            print(f"pushed: {push_space(folder, args.push)}")
    elif args.to in deployment.FORMATS:
        report = deployment.export(
            deployment.load_model_folder(args.model_dir),
            args.output,
            to=args.to,
            height=args.height,
            width=args.width,
            dynamic=args.dynamic_axes,
            opset=args.opset,
            exporter=args.exporter,
            quantize=args.quantize,
            overwrite=args.overwrite,
            inputs=[args.model_dir],
        )
        print(f"written: {report.summary()}")
    else:
        print(f"written: {export_folder(args.model_dir, args.to, args.output, overwrite=args.overwrite)}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, OSError) as error:  # CheckpointError is a ValueError; OSError: missing or existing paths
        print(f"swinv2-hf {args.command}: error: {error}", file=sys.stderr)
        return BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
