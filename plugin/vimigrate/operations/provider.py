"""Operations of ``vimigrate.nodes.Provider``."""

from __future__ import annotations

from typing import Any

from cloudify import ctx
from cloudify.decorators import operation

from .. import _native
from .. import properties as rp
from ._support import map_errors, provider_config


@operation(resumable=True)
@map_errors
def probe(**_: Any) -> None:
    """Connects to the provider, checks it, and stores what it is as runtime properties
    (``provider``: versions, platform, experimental mode; ``engine_version``)."""
    config = provider_config(ctx.node.id, ctx.node.properties, ctx.deployment.id)
    report = _native.Provider.connect(config).probe()
    if not report["experimental"]:
        ctx.logger.warning(
            "provider %s runs without experimental mode: containers on it cannot be migrated", report["name"]
        )
    ctx.instance.runtime_properties[rp.PROVIDER_REPORT] = report
    ctx.instance.runtime_properties[rp.ENGINE_VERSION] = _native.version()
    ctx.logger.info(
        "provider %s: Docker %s, API %s, %s/%s, experimental=%s",
        report["name"], report["server_version"], report["api_version"], report["os"], report["arch"],
        report["experimental"],
    )
