"""Measurements shared by the benchmark scripts: interleaved timing (A B A B ... after a warm-up, so that drift and
noise of a busy machine fall on every contender alike; CUDA events on a GPU) and the peak memory of a step."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

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


def peak_memory_mib(step: Callable[[], object], device: torch.device) -> float:
    """Peak memory that PyTorch's allocator holds during `step`, above what it held before, in MiB.

    CUDA: `max_memory_allocated`. CPU: the profiler's allocation records, each of which carries the allocator's running
    total, so the figure is the same on every run of the same step (measured: identical to the byte over repeated
    runs). The resident high-water mark used before moved by up to 15% between runs with glibc's heap and page reuse.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        step()
        return (torch.cuda.max_memory_allocated() - baseline) / 2**20
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        step()
    records = sorted(_allocation_records(profile.profiler.kineto_results.experimental_event_tree()))
    if not records:
        return 0.0
    _, first_total, first_size = records[0]
    baseline = first_total - first_size  # what the allocator held when the step began
    return (max(total for _, total, _ in records) - baseline) / 2**20


def _allocation_records(nodes: list) -> list[tuple[int, int, int]]:
    """(time, allocator total after it, size) of every allocation and free in a profiler event tree."""
    records, stack = [], list(nodes)
    while stack:
        node = stack.pop()
        if node.tag == torch._C._profiler._EventType.Allocation:
            records.append((node.start_time_ns, node.extra_fields.total_allocated, node.extra_fields.alloc_size))
        stack.extend(node.children)
    return records
