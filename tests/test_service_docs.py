"""The API docs (/docs, /redoc) load every file from the service itself: they work with no
internet, as the README promises of the dashboard."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")

from fastapi.testclient import TestClient  # noqa: E402

from retain.service import create_app  # noqa: E402
from retain.store import Store  # noqa: E402


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path = tmp_path_factory.mktemp("docs") / "empty.duckdb"
    Store(path).close()  # the docs need no orders
    with TestClient(create_app(path, warm=False)) as served:
        yield served


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_load_nothing_from_elsewhere(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    html = response.text
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.I), html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith(".js") for a in assets), assets
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200, asset
        if asset.endswith((".js", ".css")):
            assert len(served.content) > 10_000, asset
    assert client.get("/openapi.json").status_code == 200


def test_swagger_ui_is_a_version_that_reads_openapi_3_1(client: TestClient) -> None:
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    bundle = client.get("/docs/assets/swagger-ui-bundle.js").text
    # Swagger UI 5 reads OpenAPI 3.1; 4 shows "Unable to render this definition"
    assert re.search(r'"5\.\d+\.\d+"', bundle)


def test_the_docs_assets_are_in_an_installed_package() -> None:
    from retain.service.app import docs_assets_dir

    folder = docs_assets_dir()
    assert isinstance(folder, Path)
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        assert (folder / name).is_file(), name
