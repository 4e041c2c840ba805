"""Checkpoint images hold process memory: private while they exist, deleted from both hosts
after a migration and after a rollback. (No secret in any output, event, error or runtime
property of a whole deployment's life in `cfy`: tests/cfy/test_secrets_cfy.py.)"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from framework.engine import HostFiles, connect_both, container_ids, docker, on_both, root_dir
from framework.workloads import run_counter

import vimigrate


def test_checkpoint_images_are_private_and_deleted(lab):
    """Checkpoint directories (process memory) are 0700 while they exist, and gone from both
    hosts after a migration and after a rollback."""
    a, b = connect_both(lab)
    name = f"vmtest-private-{uuid.uuid4().hex[:6]}"
    watch = HostFiles(lab)
    try:
        run_counter(lab, name, runtime="vimigrate")
        vimigrate.migrate(a, b, {"container": name})
        with pytest.raises(vimigrate.MigrationFailedError):
            vimigrate.migrate(b, a, {"container": name, "fault": "corrupt_stream"})
        seen = watch.stop()
        assert seen.checkpoints, "the watcher saw the checkpoints"
        for path, mode in seen.checkpoints:
            assert mode == 0o700, (path, oct(mode))
        # It runs on B again (the corrupted move back rolled back); nothing else is left.
        id_b = docker(lab, "provider-b", "inspect", "-f", "{{.Id}}", name).strip()
        assert list((root_dir(lab, "provider-b") / "containers" / id_b / "checkpoints").iterdir()) == [], \
            "checkpoint data left on B"
        assert container_ids(lab, "provider-a", f"name=^/{name}$") == []
        seen_paths = {Path(path).parent.parent.name for path, _ in seen.checkpoints}
        assert len(seen_paths) >= 3, f"checkpoints of A, B and the rolled-back destination: {seen_paths}"
    finally:
        watch.stop()
        on_both(lab, "rm", "-f", name)
