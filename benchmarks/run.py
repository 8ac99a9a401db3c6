"""swinv2_hf against transformers' Swinv2: the same weights, timed interleaved, as ratios.

Builds transformers' Swinv2ForImageClassification with random weights and ours from the same state dict (through the
conversion code), checks that they agree, then times both A B A B ... after a warm-up:
- inference (eval, no grad) at each batch size: float32, bfloat16 autocast and bfloat16 weights;
- with --compile, `torch.compile` of both (fullgraph for ours), and ours compiled against transformers in eager;
- a training step (forward, cross-entropy, backward, AdamW) at the largest batch;
- the peak memory of that training step (timing.peak_memory_mib: the allocator's peak, the same figure on every run);
and reports achieved GFLOP/s (FLOPs counted on the meta device) against a float32 matmul ceiling measured in the same
run (torch.mm at 2048^3, and oneDNN's GEMM on CPU). Results depend on the CPU, so they are kept per CPU kind: the run
records the CPU's features (AVX2, AVX-512, AVX512-BF16, AMX, VNNI) and writes `<kind>.json`, `<kind>.md` and
`<kind>.png`, e.g. `amd-avx2` or `amd-avx512-bf16`.

    python benchmarks/run.py [--size tiny] [--resolution 256] [--window 8] [--batch-sizes 1 8] [--compile]
                             [--dtypes float32 bfloat16 bfloat16-weights] [--device cpu] [--repeats 10]
                             [--output-dir benchmarks/results]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import Timing, interleaved, paired_ratios, peak_memory_mib
from transformers import Swinv2Config, Swinv2ForImageClassification

from swinv2_hf import SwinV2Config, SwinV2ForImageClassification
from swinv2_hf.configuration_swinv2_hf import SIZES, size_variant
from swinv2_hf.conversion import convert_state_dict
from swinv2_hf.model_card import count_parameters_and_flops

AGREEMENT_ATOL = 1e-3  # float32 logits of random 1000-class heads; parity proper is in tests/
CEILING_SIZE = 2048
MODELS = ("transformers", "swinv2_hf")
DTYPES = ("float32", "bfloat16", "bfloat16-weights")  # bfloat16 = autocast over float32 weights
# /proc/cpuinfo flags -> the feature names the results show.
CPU_FEATURES = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_bf16": "AVX512-BF16",
    "amx_tile": "AMX",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
}


@dataclass
class Row:
    """One scenario: both models' timings and our speed-up."""

    scenario: str
    transformers_ms: float
    transformers_range: str
    swinv2_hf_ms: float
    swinv2_hf_range: str
    speedup: float
    speedup_range: str
    swinv2_hf_gflops: float | None = None
    transformers_gflops: float | None = None


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, the input sizes and the timing: what every benchmark here takes."""
    # The released sizes: transformers' Swinv2, the other contender, has no main-branch norm for H and G.
    parser.add_argument("--size", default="tiny", choices=[size for size in SIZES if size_variant(size).release])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "results")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of both (minutes on CPU)")
    parser.add_argument("--no-training", action="store_true", help="skip the training step and its memory")
    return parser.parse_args(argv)


def build_models(args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    """transformers' model with random weights and ours with the same weights."""
    preset = size_variant(args.size).name
    ours_config = SwinV2Config.from_preset(preset, image_size=args.resolution, window_size=args.window, num_labels=1000)
    theirs_config = Swinv2Config(
        image_size=args.resolution,
        embed_dim=ours_config.embed_dim,
        depths=list(ours_config.depths),
        num_heads=list(ours_config.num_heads),
        window_size=args.window,
        num_labels=1000,
    )
    torch.manual_seed(0)
    theirs = Swinv2ForImageClassification(theirs_config)
    ours = SwinV2ForImageClassification(ours_config)
    ours.load_state_dict(convert_state_dict(theirs.state_dict(), "transformers"))
    return {"transformers": theirs.to(args.device), "swinv2_hf": ours.to(args.device)}


def check_agreement(models: dict[str, torch.nn.Module], pixels: torch.Tensor) -> float:
    with torch.no_grad():
        logits = [model.eval()(pixels).logits for model in models.values()]
    difference = (logits[0] - logits[1]).abs().max().item()
    if difference > AGREEMENT_ATOL:
        raise SystemExit(f"The models disagree by {difference:.2e}; the timings would compare different things.")
    return difference


def inference(model: torch.nn.Module, pixels: torch.Tensor, dtype: str) -> Callable[[], object]:
    """Eval-mode forward without gradients; "bfloat16-weights" expects the model already cast."""
    autocast = torch.autocast(pixels.device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    pixels = pixels.to(torch.bfloat16) if dtype == "bfloat16-weights" else pixels

    def call() -> object:
        with torch.no_grad(), autocast:
            return model(pixels).logits

    return call


def training_step(model: torch.nn.Module, pixels: torch.Tensor) -> Callable[[], object]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    labels = torch.arange(len(pixels), device=pixels.device) % 1000

    def step() -> object:
        loss = F.cross_entropy(model(pixels).logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def matmul_ceilings(device: torch.device) -> dict[str, float]:
    """GFLOP/s of float32 2048^3 matmuls: torch.mm, and on CPU oneDNN's GEMM (which our linear layers use)."""
    a, b = (torch.randn(CEILING_SIZE, CEILING_SIZE, device=device) for _ in range(2))
    functions = {"torch.mm": lambda: a @ b}
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        functions["oneDNN"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    timings = interleaved(functions, repeats=5, warmup=2, device=device)
    return {name: 2 * CEILING_SIZE**3 / (timing.median * 1e6) for name, timing in timings.items()}


def row(scenario: str, timings: dict[str, Timing], flops: float | None = None) -> Row:
    theirs, ours = timings["transformers"], timings["swinv2_hf"]
    speedup, low, high = paired_ratios(theirs, ours)
    gflops = {name: flops / (timing.median * 1e6) if flops else None for name, timing in timings.items()}
    return Row(
        scenario,
        round(theirs.median, 2),
        f"{min(theirs.values):.1f}-{max(theirs.values):.1f}",
        round(ours.median, 2),
        f"{min(ours.values):.1f}-{max(ours.values):.1f}",
        round(speedup, 3),
        f"{low:.2f}-{high:.2f}",
        swinv2_hf_gflops=gflops["swinv2_hf"] and round(gflops["swinv2_hf"], 1),
        transformers_gflops=gflops["transformers"] and round(gflops["transformers"], 1),
    )


def cpu_description() -> dict:
    """The CPU's name, vendor, family/model and the features that decide its kernels."""
    info: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    flags = set(info.get("flags", "").split())
    return {
        "name": info.get("model name", platform.processor()),
        "vendor": {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(info.get("vendor_id", ""), platform.machine()),
        "family_model": f"{info.get('cpu family', '?')}/{info.get('model', '?')}",
        "features": [name for flag, name in CPU_FEATURES.items() if flag in flags],
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    }


def cpu_kind(cpu: dict) -> str:
    """A file name for the CPU kind: vendor and the richest of AMX, AVX512-BF16, AVX-512, AVX2."""
    for feature in ("AMX", "AVX512-BF16", "AVX-512", "AVX2"):
        if feature in cpu["features"]:
            return f"{cpu['vendor']}-{feature.lower().replace('-', '')}".replace("avx512bf16", "avx512-bf16")
    return f"{cpu['vendor']}-baseline"


def training_memory(models: dict[str, torch.nn.Module], pixels: torch.Tensor) -> dict[str, float]:
    """Peak memory of one training step of each model, after a first step has created the optimiser's state: the
    activations, gradients and temporaries."""
    memory = {}
    for name, model in models.items():
        step = training_step(model.train(), pixels)
        step()
        memory[name] = round(peak_memory_mib(step, pixels.device), 1)
    return memory


def run_benchmarks(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    models = build_models(args)
    pixels = {
        batch: torch.randn(batch, 3, args.resolution, args.resolution, device=device) for batch in args.batch_sizes
    }
    difference = check_agreement(models, pixels[min(args.batch_sizes)])
    _, flops_per_image = count_parameters_and_flops(models["swinv2_hf"].config, "SwinV2ForImageClassification")
    flops_per_image *= 2  # multiply-adds -> FLOPs
    largest = max(args.batch_sizes)
    rows = []

    def measure(scenario: str, calls: dict[str, Callable[[], object]], flops: float, repeats: int) -> None:
        """Time `calls` interleaved; a row of swinv2_hf against each transformers contender (the first is the
        scenario's own, a second one is transformers in eager)."""
        timings = interleaved(calls, repeats, args.warmup, device)
        for index, baseline in enumerate(name for name in calls if name.startswith("transformers")):
            label = f"{scenario}, against transformers in eager" if index else scenario
            rows.append(row(label, {"transformers": timings[baseline], "swinv2_hf": timings["swinv2_hf"]}, flops))
            print(rows[-1], flush=True)

    for dtype in args.dtypes:
        cast = {
            name: copy.deepcopy(model).to(torch.bfloat16) if dtype == "bfloat16-weights" else model
            for name, model in models.items()
        }
        for batch in args.batch_sizes:
            calls = {name: inference(model.eval(), pixels[batch], dtype) for name, model in cast.items()}
            measure(f"inference {dtype} batch {batch}", calls, flops_per_image * batch, args.repeats)
    if args.compile:
        calls = {
            "transformers_compiled": inference(torch.compile(models["transformers"]), pixels[largest], "float32"),
            "transformers": inference(models["transformers"], pixels[largest], "float32"),
            "swinv2_hf": inference(torch.compile(models["swinv2_hf"], fullgraph=True), pixels[largest], "float32"),
        }
        measure(f"inference float32 batch {largest}, compiled", calls, flops_per_image * largest, args.repeats)
    memory = {}
    if not args.no_training:
        calls = {name: training_step(model.train(), pixels[largest]) for name, model in models.items()}
        measure(
            f"training step float32 batch {largest}", calls, 3 * flops_per_image * largest, max(3, args.repeats // 2)
        )
        memory = training_memory(models, pixels[largest])
        print("peak training-step memory (MiB):", memory, flush=True)
    return {
        "machine": machine_description(device),
        "cpu": cpu_description() if device.type == "cpu" else None,
        "model": f"SwinV2-{args.size[0].upper()} {args.resolution}px window {args.window}",
        "flops_per_image": flops_per_image,
        "max_logit_difference": difference,
        "matmul_ceiling_gflops": {name: round(value, 1) for name, value in matmul_ceilings(device).items()},
        "rows": [asdict(item) for item in rows],
        "peak_training_memory_mib": memory,
    }


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = cpu_description()
    return (
        f"{cpu['name']} (family/model {cpu['family_model']}; {', '.join(cpu['features']) or 'no AVX2'}), "
        f"{os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )


def markdown(results: dict) -> str:
    lines = [
        f"{results['model']} on {results['machine']}; same weights (max logit difference "
        f"{results['max_logit_difference']:.1e}); medians of interleaved runs (min-max); speed-up = transformers' "
        "time / ours (range over the interleaved pairs).",
        "",
        "| scenario | transformers | swinv2_hf | speed-up | GFLOP/s (theirs / ours) |",
        "|---|---|---|---|---|",
    ]
    for item in results["rows"]:
        gflops = f"{item['transformers_gflops']} / {item['swinv2_hf_gflops']}" if item["swinv2_hf_gflops"] else ""
        lines.append(
            f"| {item['scenario']} | {item['transformers_ms']} ms ({item['transformers_range']}) | "
            f"{item['swinv2_hf_ms']} ms ({item['swinv2_hf_range']}) | {item['speedup']:.2f}x "
            f"({item['speedup_range']}) | {gflops} |"
        )
    ceilings = ", ".join(f"{name} {value} GFLOP/s" for name, value in results["matmul_ceiling_gflops"].items())
    lines += ["", f"float32 matmul ceiling ({CEILING_SIZE}^3) measured in the same run: {ceilings}."]
    memory = results["peak_training_memory_mib"]
    if memory:
        lines.append(
            f"Peak memory of a training step (the allocator's peak, identical across runs): transformers "
            f"{memory['transformers']} MiB, swinv2_hf {memory['swinv2_hf']} MiB "
            f"({memory['swinv2_hf'] / memory['transformers']:.2f}x)."
        )
    return "\n".join(lines) + "\n"


def bar_chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [item["scenario"] for item in results["rows"]]
    speedups = [item["speedup"] for item in results["rows"]]
    figure, axes = plt.subplots(figsize=(8, 0.5 * len(scenarios) + 1.5))
    axes.barh(scenarios, speedups, color="tab:blue")
    axes.axvline(1.0, color="black", linewidth=1)
    axes.set_xlabel("speed-up over transformers' Swinv2 (time ratio)")
    axes.set_title(f"{results['model']}\n{results['machine']}", fontsize=9)
    axes.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    args = parse_args()
    results = run_benchmarks(args)
    kind = cpu_kind(results["cpu"]) if results["cpu"] else torch.cuda.get_device_name().lower().replace(" ", "-")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / f"{kind}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.output_dir / f"{kind}.md").write_text(table)
    bar_chart(results, args.output_dir / f"{kind}.png")
    print(table)


if __name__ == "__main__":
    main()
