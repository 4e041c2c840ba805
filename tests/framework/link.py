"""Links between the lab's providers shaped as slow ones are (tbf on the host end of a provider's
veth: this kernel has no netem, so rate only), always put back afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from framework.lab import Lab
from framework.process import run


@contextlib.contextmanager
def shaped(lab: Lab, provider: str, mbit: int) -> Iterator[str]:
    """Traffic into `provider` limited to `mbit` Mbit/s while the block runs; yields the
    interface shaped."""
    link = lab.provider(provider).host_link()
    run(["tc", "qdisc", "replace", "dev", link, "root", "tbf", "rate", f"{mbit}mbit", "burst", "512kb",
         "latency", "100ms"], check=True)
    try:
        yield link
    finally:
        run(["tc", "qdisc", "del", "dev", link, "root"], check=False)
