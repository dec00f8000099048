from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

ClientFactory = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture
def make_client(demo_artifact_dir: Path) -> ClientFactory:
    """`with make_client(max_batch_size=4) as client:` — the real app, lifespan and model."""

    @contextmanager
    def factory(**overrides: Any) -> Iterator[TestClient]:
        settings = Settings(**{"artifact_dir": demo_artifact_dir, **overrides})
        with TestClient(create_app(settings)) as client:
            yield client

    return factory


@pytest.fixture
def client(make_client: ClientFactory) -> Iterator[TestClient]:
    with make_client() as c:
        yield c
