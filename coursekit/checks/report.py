"""How every check reports: one failure format, one success line."""
from __future__ import annotations

import functools
import numbers

import numpy as np


class CheckFailed(AssertionError):
    """A student check failed; the message says expected, got and a hint."""


def fail(what: str, expected: object, got: object, hint: str) -> None:
    """Raise ``CheckFailed`` with the kit's three-part message."""
    raise CheckFailed(f"{what}\n  expected: {expected}\n  got:      {got}\n  hint: {hint}")


def expect(condition: bool, what: str, expected: object, got: object, hint: str) -> None:
    """``fail(...)`` unless ``condition`` holds."""
    if not condition:
        fail(what, expected, got, hint)


def expect_close(what: str, expected, got, hint: str, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Fail unless arrays (NumPy or torch) ``got`` and ``expected`` agree in shape and value."""
    exp = np.asarray(expected.detach().cpu() if hasattr(expected, "detach") else expected, dtype=np.float64)
    out = np.asarray(got.detach().cpu() if hasattr(got, "detach") else got, dtype=np.float64)
    expect(exp.shape == out.shape, f"{what}: wrong shape", exp.shape, out.shape, hint)
    if not np.allclose(out, exp, rtol=rtol, atol=atol, equal_nan=True):
        worst = np.unravel_index(np.nanargmax(np.abs(out - exp)), exp.shape) if exp.size else ()
        fail(f"{what}: wrong values (largest difference at index {tuple(int(i) for i in worst)})",
             float(exp[worst]) if exp.size else exp, float(out[worst]) if exp.size else out, hint)


def passed(name: str) -> None:
    """Print the success line of a check."""
    print(f"check passed: {name}")


def run_student(what: str, fn, *args, **kwargs):
    """Call the student's ``fn``; turn ``NotImplementedError`` into a clear failure."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        fail(f"{what} is not implemented yet", "your implementation", "NotImplementedError",
             "fill in the code between the exercise markers, then run this check again.")


def expect_number(what: str, got, expected: str, hint: str) -> float:
    """``got`` as a float: a Python number or a one-element tensor; anything else fails.

    Args:
        what: the failure's first line, e.g. ``"accuracy must return a number"``.
        expected: how the expected value is described, e.g. ``"a float in [0, 1]"``.
    """
    if hasattr(got, "numel") and got.numel() == 1:
        got = got.item()
    expect(isinstance(got, numbers.Real) and not isinstance(got, bool), what, expected, type(got).__name__, hint)
    return float(got)


def call_student(what: str, fn, *args, hint: str):
    """``fn(*args)`` as ``run_student`` runs it; any other error becomes a ``CheckFailed`` that names it, with ``hint``."""
    try:
        return run_student(what, fn, *args)
    except CheckFailed:
        raise
    except Exception as error:  # the student's code may fail in any way; say what to look at
        fail(f"{what} raised {type(error).__name__}: {error}", "a result", type(error).__name__, hint)


def keeps_random_state(check):
    """Decorator: run ``check`` inside ``torch.random.fork_rng``, so that the notebook's random streams (CPU and
    CUDA) are as they were before the check; torch is imported only when such a check runs."""
    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        import torch

        with torch.random.fork_rng():
            return check(*args, **kwargs)

    return wrapper
