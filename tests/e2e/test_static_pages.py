"""The static pages without a browser: demo data that is real, no HTML injection sinks."""

from __future__ import annotations

import re
from pathlib import Path

from assistant.demo.shop import STORE_NAME, build_shop
from assistant.tools.shop import money

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"
SCRIPTS = ("dlm-client.js", "widget.js", "console.js", "tutor.js")


def test_demo_page_hint_names_a_real_order() -> None:
    """The order and email the demo page suggests exist in the demo store, together."""
    page = (STATIC / "demo.html").read_text()
    number = re.search(r"<code data-demo-order>([^<]+)</code>", page)
    email = re.search(r"<code data-demo-email>([^<]+)</code>", page)
    assert number and email
    orders = {order.number: order for order in build_shop().orders}
    assert number.group(1) in orders
    assert orders[number.group(1)].email == email.group(1)


def test_demo_page_products_match_the_catalog() -> None:
    """Every product card names a real SKU with its catalog name and price."""
    page = (STATIC / "demo.html").read_text()
    products = {p.sku: p for p in build_shop().products}
    cards = re.findall(
        r"<h3>([^<]+)</h3><p class=\"price\">([^<]+)</p><p class=\"sku\">([^<]+)</p>", page
    )
    assert len(cards) >= 6
    for name, price, sku in cards:
        assert products[sku].name == name
        assert money(products[sku].price_cents) == price
    assert STORE_NAME in page


def test_pages_embed_the_key_placeholders() -> None:
    """The gateway fills in the public key and the WebSocket path; the widget is one tag."""
    demo = (STATIC / "demo.html").read_text()
    tags = re.findall(r"<script[^>]*>", demo)
    assert tags == [
        '<script src="/static/widget.js" data-key="{{PUBLIC_KEY}}" '
        'data-title="Northwind support" async>'
    ]
    assert "{{PUBLIC_KEY}}" in (STATIC / "tutor.html").read_text()
    assert "{{WS_PATH}}" in (STATIC / "console.html").read_text()


def test_scripts_have_no_html_sinks() -> None:
    """Network text is only ever set with textContent: no innerHTML, outerHTML, eval."""
    for name in SCRIPTS:
        source = (STATIC / name).read_text()
        code = re.sub(r"/\*.*?\*/|//[^\n]*", "", source, flags=re.S)
        for sink in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            assert sink not in code, f"{name} uses {sink}"


def test_pages_load_nothing_from_elsewhere() -> None:
    """No CDN: every src and href is local (or an in-page anchor)."""
    for page in STATIC.glob("*.html"):
        text = page.read_text()
        for url in re.findall(r"(?:src|href)=\"([^\"]+)\"", text):
            assert url.startswith(("/", "#")) or url == "data:,", f"{page.name} loads {url}"
