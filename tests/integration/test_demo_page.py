"""The demo page (examples/demo.html, served at GET /_rig/demo) in headless Chromium.

For each transport: connect, subscribe, publish from the page, and the
event shows up in the page's list. The shared gateway has extractors for
``greeting`` (field ``name``), so a constraint really filters.
"""

from __future__ import annotations

import json

import pytest
import requests
from browser import chrome, screenshot
from conftest import ROOT

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    yield from chrome(tmp_path_factory.mktemp("chrome"))


def by_id(driver, element_id: str):
    return driver.find_element("id", element_id)


def wait_for(driver, condition, timeout: float = 10.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition())


def fill(driver, element_id: str, value: str) -> None:
    field = by_id(driver, element_id)
    field.clear()
    field.send_keys(value)


def received(driver, event_type: str) -> list[str]:
    """The data shown for each received event of ``event_type``, newest first."""
    items = driver.find_elements("css selector", f'#events li[data-type="{event_type}"] .data')
    return [item.text for item in items]


def connect(driver, transport: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(by_id(driver, "transport")).select_by_value(transport)
    by_id(driver, "connect").click()
    wait_for(driver, lambda: by_id(driver, "connection-state").text.startswith("connected"))


def subscribe(driver, event_type: str, field: str = "", equals: str = "") -> None:
    fill(driver, "sub-type", event_type)
    fill(driver, "sub-field", field)
    fill(driver, "sub-value", equals)
    by_id(driver, "subscribe").click()
    wait_for(driver, lambda: event_type in by_id(driver, "subscriptions").text)


def publish(driver, event_type: str, data: dict) -> None:
    fill(driver, "pub-type", event_type)
    fill(driver, "pub-data", json.dumps(data))
    by_id(driver, "publish").click()
    wait_for(driver, lambda: "202" in by_id(driver, "publish-state").text)
    by_id(driver, "publish-state").click()  # harmless; keeps focus off the inputs


def test_the_gateway_serves_the_demo_page(gateway):
    response = requests.get(f"{gateway.inbound}/_rig/demo", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.content == (ROOT / "examples" / "demo.html").read_bytes()
    # Self-contained: no script, style or font from anywhere else.
    assert "src=" not in response.text and "href=" not in response.text


@pytest.mark.parametrize("transport", ["sse", "ws", "longpolling"])
def test_connect_subscribe_publish_and_see_the_event(gateway, driver, transport):
    driver.delete_all_cookies()  # a fresh long-polling session each time
    driver.get(f"{gateway.inbound}/_rig/demo")
    connect(driver, transport)
    event_type = f"demo.{transport}"
    subscribe(driver, event_type)
    publish(driver, event_type, {"text": f"hello over {transport}"})
    wait_for(driver, lambda: received(driver, event_type))
    assert json.loads(received(driver, event_type)[0]) == {"text": f"hello over {transport}"}
    screenshot(driver, f"demo-{transport}.png")
    by_id(driver, "disconnect").click()


def test_a_constraint_filters_events(gateway, driver):
    driver.get(f"{gateway.inbound}/_rig/demo")
    connect(driver, "sse")
    subscribe(driver, "greeting", "name", "alice")
    assert '{"name":"alice"}' in by_id(driver, "subscriptions").text
    publish(driver, "greeting", {"name": "bob", "text": "not for alice"})
    publish(driver, "greeting", {"name": "alice", "text": "for alice"})
    wait_for(driver, lambda: received(driver, "greeting"))
    # Events of one connection arrive in order: had bob's matched, it would be here.
    assert [json.loads(d)["name"] for d in received(driver, "greeting")] == ["alice"]
    by_id(driver, "disconnect").click()


def test_the_page_also_works_opened_as_a_file(gateway, driver):
    driver.get((ROOT / "examples" / "demo.html").as_uri())
    assert by_id(driver, "base").get_attribute("value") == "http://localhost:4000"
    fill(driver, "base", gateway.inbound)
    connect(driver, "sse")
    subscribe(driver, "demo.file")
    publish(driver, "demo.file", {"text": "from a file"})
    wait_for(driver, lambda: received(driver, "demo.file"))
    screenshot(driver, "demo-file.png")
    by_id(driver, "disconnect").click()
