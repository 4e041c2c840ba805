"""The plugin packs as a wagon, the archive a Cloudify Manager installs plugins from. Needs no
lab, but the Rust toolchain and the checkout's build tree (scripts/build-wagon.sh builds the
engine), so it is not in the unprivileged unit layer."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from framework.lab import ROOT
from framework.process import run


def test_wagon_holds_the_engine_and_plugin_yaml(tmp_path: Path):
    result = run(["bash", str(ROOT / "scripts/build-wagon.sh"), str(tmp_path)], timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    [wagon] = list(tmp_path.glob("vimigrate-*.wgn"))
    archive = zipfile.ZipFile(wagon)
    meta = json.loads(archive.read("vimigrate/package.json"))
    assert meta["package_name"] == "vimigrate"
    [wheel_name] = [n for n in archive.namelist() if n.endswith(".whl")]
    wheel = zipfile.ZipFile(io.BytesIO(archive.read(wheel_name)))
    names = wheel.namelist()
    assert "vimigrate/_native.abi3.so" in names
    assert "vimigrate/workflows/migrate.py" in names
    assert wheel.read("vimigrate/plugin.yaml").decode() == (ROOT / "plugin/plugin.yaml").read_text()
