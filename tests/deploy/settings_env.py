"""Check an environment (MLTAG_* variables) against the service's real Settings model."""

from __future__ import annotations

from collections.abc import Mapping

import pytest


def check_settings_env(env: Mapping[str, str], where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every MLTAG_* key names a setting (the service ignores unknown ones silently, so a typo
    would go unnoticed), and the values validate."""
    from service.settings import Settings

    fields = {"MLTAG_" + name.upper() for name in Settings.model_fields}
    keys = {k for k in env if k.startswith("MLTAG_")}
    unknown = keys - fields
    assert not unknown, f"{where}: not settings: {sorted(unknown)}"
    with monkeypatch.context() as m:
        for name in fields:
            m.delenv(name, raising=False)
        for key in keys:
            m.setenv(key, str(env[key]))
        Settings()  # raises on an invalid value
