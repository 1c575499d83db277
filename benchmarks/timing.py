"""Timing shared by the benchmark scripts (imported by them; not a benchmark itself)."""
from __future__ import annotations

import time

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so a timer sees it; nothing on other devices."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn, *args) -> tuple[float, object]:
    """``(seconds, result)`` of one call of ``fn(*args)``, synchronising ``device`` around it."""
    synchronize(device)
    start = time.perf_counter()
    result = fn(*args)
    synchronize(device)
    return time.perf_counter() - start, result
