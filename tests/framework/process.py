"""Running commands and waiting for conditions: what every layer of the tests does."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def run(cmd: list[str], timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Runs a command, capturing text output; the caller asserts on the result."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def wait_for(predicate: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """Polls `predicate` until it returns something true, which is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def answers(check: Callable[[], T]) -> T | bool:
    """`check()`, or False while the service it talks to does not answer (connection refused,
    reset, timed out)."""
    try:
        return check()
    except OSError:
        return False
