"""docs/deployment.md: the settings table is generated from service/settings.py; the files
and commands it names exist."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType

from .conftest import REPO, require_service

DOC = REPO / "docs" / "deployment.md"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "settings_reference", REPO / "deploy" / "settings_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_table_is_up_to_date() -> None:
    require_service()
    generator = _generator()
    committed = generator.committed_table(DOC.read_text())
    assert committed == generator.render_table(), (
        "docs/deployment.md is stale: run `python deploy/settings_reference.py --write`"
    )


def test_every_setting_is_documented() -> None:
    require_service()
    from service.settings import Settings

    text = DOC.read_text()
    for name in Settings.model_fields:
        assert f"`MLTAG_{name.upper()}`" in text, name


def test_paths_named_in_the_doc_exist() -> None:
    text = DOC.read_text()
    paths = set(re.findall(r"`((?:docker|k8s|deploy|tests/deploy)/[\w./-]*)`", text))
    paths |= {"docker-compose.yml", "docker-compose.gpu.yml", ".ci/system-deps.sh"}
    assert len(paths) > 10
    missing = sorted(p for p in paths if not (REPO / p.rstrip("/")).exists())
    assert not missing, missing
