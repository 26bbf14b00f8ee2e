"""The live status page (GET /_rig/status on the internal API) in headless Chromium."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from browser import chrome, screenshot
from clients import ce

pytestmark = pytest.mark.browser

NONE = "\u2013"  # what the page shows before a number is known (an en dash)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    yield from chrome(tmp_path_factory.mktemp("chrome"))


def text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def wait_for(driver, condition, timeout: float = 10.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition())


def test_status_page_shows_the_gateway_live(gateway_factory, driver):
    gw = gateway_factory()
    driver.get(f"{gw.api}/_rig/status")
    wait_for(driver, lambda: text(driver, "stream-state") == "live")
    assert text(driver, "connections-total") == "0"
    assert text(driver, "kafka-state") == "disabled"
    assert text(driver, "workers-count") == "1"

    clients = [gw.sse([{"eventType": "status.demo"}]) for _ in range(3)]
    try:
        for sse in clients:
            sse.events(2)
        wait_for(driver, lambda: text(driver, "connections-total") == "3")
        assert text(driver, "conn-sse") == "3"
        assert text(driver, "subscriptions") == "3"

        # Events flow: the rates, the totals and the p99 change on their own.
        started = time.monotonic()
        n = 0
        while time.monotonic() < started + 15:
            n += 1
            gw.publish(ce("status.demo", {"n": n}, id_=str(n)))
            for sse in clients:
                sse.next_event()
            time.sleep(0.02)
            if time.monotonic() - started < 4:
                continue  # a few seconds of traffic: a chart worth a screenshot
            if (
                text(driver, "events-rate") not in ("0", NONE)
                and text(driver, "deliveries-rate") not in ("0", NONE)
                and text(driver, "p99").endswith(" ms")
            ):
                break
        assert text(driver, "events-rate") not in ("0", NONE)
        assert text(driver, "deliveries-rate") not in ("0", NONE)
        assert text(driver, "p99").endswith(" ms")
        assert int(text(driver, "deliveries-total").replace(",", "")) >= 3
        points = driver.find_element("id", "line-deliveries").get_attribute("points")
        assert len(points.split()) >= 2  # the chart is drawn
        screenshot(driver, "status-page.png")
    finally:
        for sse in clients:
            sse.close()
    wait_for(driver, lambda: text(driver, "connections-total") == "0")

    # Everything the page loaded came from the gateway itself: no CDN.
    loaded = driver.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; })"
    )
    assert loaded, "the page's script and stream should be listed"
    for url in loaded:
        assert urlsplit(url).netloc == urlsplit(gw.api).netloc, url
