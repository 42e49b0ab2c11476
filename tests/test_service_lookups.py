"""Finding customers and segments through the service: ids in any case, search anywhere
in an id or e-mail, and unknown segments as "not found"."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")

from fastapi.testclient import TestClient  # noqa: E402

from retain.service import create_app  # noqa: E402
from store_helpers import store_of  # noqa: E402

# Shopify-style: customers keyed by their lower-cased e-mail
ORDERS = """order_id,customer_id,ordered_at,net_revenue
o1,customer0@example.com,2024-01-10,10.00
o2,customer0@example.com,2024-03-10,30.00
o3,zed-42,2024-02-01,5.50
o4,ab-7,2024-01-05,20.00
o5,ab-7,2024-02-05,20.00
"""
LINES = """order_id,sku,name,quantity,unit_price
o1,TEA,Green tea,1,10
o2,CUP,Tea cup,1,30
o3,TEA,Green tea,1,5.5
o4,POT,Teapot,1,20
o5,TEA,Green tea,1,20
"""
PEOPLE = """customer_id,email,name,accepts_marketing
zed-42,Zed.Smith@Shop.example,Zed,yes
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path = store_of(
        tmp_path_factory.mktemp("lookups"), orders=ORDERS, lines=LINES, customers=PEOPLE
    )
    with TestClient(create_app(path, warm=False), client=("127.0.0.1", 50000)) as served:
        yield served


def test_a_customer_keyed_by_email_is_found_whatever_its_case(client: TestClient) -> None:
    for asked in ("customer0@example.com", "Customer0@Example.com", "CUSTOMER0@EXAMPLE.COM"):
        response = client.get(f"/api/customers/{asked}", params={"history": 5})
        assert response.status_code == 200, (asked, response.text)
        body = response.json()
        assert body["customer_id"] == "customer0@example.com"
        assert body["orders"]["orders"] == 2
        assert [h["order_id"] for h in body["history"]] == ["o2", "o1"]
    page = client.get("/customers/Customer0@Example.com")
    assert page.status_code == 200 and "o2" in page.text
    assert "/api/customers/customer0%40example.com?history=50" in page.text
    found = client.get("/search", params={"q": "Customer0@Example.com"}, follow_redirects=False)
    assert found.status_code == 303
    assert found.headers["location"] == "/customers/customer0%40example.com"
    assert client.get("/api/customers/Nobody@Example.com").status_code == 404


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ed-4", ["zed-42"]),  # inside an id
        ("SMITH@shop", ["zed-42"]),  # inside an e-mail, in another case
        ("EXAMPLE", ["customer0@example.com", "zed-42"]),
        ("b-7", ["ab-7"]),
        ("nobody", []),
    ],
)
def test_search_matches_anywhere_in_the_id_or_email(
    client: TestClient, text: str, expected: list[str]
) -> None:
    body = client.get("/api/customers", params={"q": text, "sort": "customer_id"}).json()
    assert [c["customer_id"] for c in body["customers"]] == expected
    assert body["total"] == len(expected) and body["q"] == text


def test_search_pages_keep_the_search_text(client: TestClient) -> None:
    first = client.get("/api/customers", params={"q": "E", "limit": 1, "sort": "customer_id"})
    body = first.json()
    assert body["total"] == 2  # customer0@example.com and zed-42 (by e-mail): not ab-7
    assert "q=E" in body["next"]
    second = client.get("/api/customers?" + body["next"]).json()
    assert second["q"] == "E" and second["total"] == 2
    assert [c["customer_id"] for c in second["customers"]] == ["zed-42"]
    page = client.get("/customers", params={"q": "ed-4"})
    assert page.status_code == 200 and "zed-42" in page.text and "contains" in page.text


def test_an_unknown_segment_is_not_found(client: TestClient) -> None:
    page = client.get("/segments/Giants")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert "Champions" in page.text  # says which segments there are
    assert client.get("/segments/champions").status_code == 200
