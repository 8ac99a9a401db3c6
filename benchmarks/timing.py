"""Measurements shared by the benchmark scripts: interleaved timing (A B A B ... after a warm-up, so that drift and
noise of a busy machine fall on every contender alike; CUDA events on a GPU) and the peak memory of a step."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Timing:
    """Milliseconds of one contender's timed calls."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def __str__(self) -> str:
        return f"{self.median:.1f} ms ({min(self.values):.1f}-{max(self.values):.1f})"


def _time_once(function: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    started = time.perf_counter()
    function()
    return (time.perf_counter() - started) * 1e3


def interleaved(
    functions: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, Timing]:
    """Time each function `repeats` times, alternating between them, after `warmup` untimed rounds."""
    timings: dict[str, list[float]] = {name: [] for name in functions}
    for round_index in range(warmup + repeats):
        for name, function in functions.items():
            elapsed = _time_once(function, device)
            if round_index >= warmup:
                timings[name].append(elapsed)
    return {name: Timing(values) for name, values in timings.items()}


def paired_ratios(baseline: Timing, candidate: Timing) -> tuple[float, float, float]:
    """Speed-up of `candidate` over `baseline`: ratio of medians, and the lowest and highest ratio of the
    interleaved pairs (the spread a single noisy comparison could show)."""
    pairs = [base / cand for base, cand in zip(baseline.values, candidate.values)]
    return baseline.median / candidate.median, min(pairs), max(pairs)


def _resident_high_water_mark_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not available (Linux only)")


def peak_memory_mib(step: Callable[[], object], device: torch.device) -> float:
    """Peak memory of `step` above what exists before it, in MiB: `max_memory_allocated` on CUDA; on CPU the resident
    high-water mark (reset first through /proc/self/clear_refs), so run one contender per fresh process."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        step()
        return (torch.cuda.max_memory_allocated() - baseline) / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    baseline = _resident_high_water_mark_mib()
    step()
    return _resident_high_water_mark_mib() - baseline
