"""Benchmark: how long a customer's WhatsApp message takes to appear on an agent's open page.

Runs the stack of the desk's browser test (Kafka, SecantusDB, customer-profile, channel-whatsapp,
channel-sms, the desk; all on this machine) and a headless chromium signed in on the customer's
page. It sends `--messages` signed WhatsApp notifications, one every `--interval` seconds, and
takes for each the time from just before the webhook is posted until the page's DOM holds it
(a MutationObserver notes `Date.now()`; the browser and this script share the machine's clock).
Prints one markdown table.

    python services/agent-desk/bench/live_latency.py --messages 60 --interval 0.5
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid

import structlog
from playwright.async_api import async_playwright

from agent_desk.testing import AGENT, PASSWORD, chromium, desk_stack
from hilo.settings import HiloSettings
from hilo.topics import ensure_topics
from hilo_devkit.local_infra import Infrastructure

PHONE = "+34612345678"
OBSERVER = """
() => {
  window.arrivals = {};
  new MutationObserver((changes) => {
    for (const change of changes) for (const node of change.addedNodes) {
      const text = node.querySelector && node.querySelector(".text");
      if (text && text.textContent.startsWith("bench ")) {
        window.arrivals[text.textContent] = Date.now();
      }
    }
  }).observe(document.getElementById("timeline"), { childList: true });
}
"""


async def measure(settings: HiloSettings, messages: int, interval: float) -> list[float]:
    """Milliseconds from posting each webhook to its row on the page."""
    await ensure_topics(settings)
    async with desk_stack(settings) as stack, async_playwright() as playwright:
        await stack.whatsapp_from(PHONE, "first message, so the customer exists")
        await stack.profile.wait_for_entries(1)
        customer = await stack.profile.customer_of("phone", PHONE)
        browser = await playwright.chromium.launch(executable_path=chromium())
        page = await browser.new_page()
        await page.goto(f"{stack.desk_url}/login?next=/customers/{customer}")
        await page.get_by_label("Agent").fill(AGENT)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_function("() => window.hiloLive && window.hiloLive.connected")
        await page.evaluate(OBSERVER)
        sent: dict[str, float] = {}
        for n in range(messages):
            text = f"bench {n} {uuid.uuid4().hex[:6]}"
            sent[text] = time.time() * 1000
            await stack.whatsapp_from(PHONE, text)
            await asyncio.sleep(interval)
        await page.wait_for_function(f"() => Object.keys(window.arrivals).length >= {messages}")
        arrivals: dict[str, float] = await page.evaluate("window.arrivals")
        await browser.close()
    return [arrivals[text] - at for text, at in sent.items()]


def table(latencies: list[float], interval: float) -> str:
    ordered = sorted(latencies)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return "\n".join(
        [
            "| messages | one every | p50 | p95 | max | mean |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {len(ordered)} | {interval:.1f} s | {statistics.median(ordered):.0f} ms "
            f"| {p95:.0f} ms | {ordered[-1]:.0f} ms | {statistics.fmean(ordered):.0f} ms |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with Infrastructure() as endpoints:
        run = uuid.uuid4().hex[:8]
        settings = HiloSettings(
            environment="development",
            kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers,
            mongodb_url=endpoints.mongodb_url,
            mongodb_database=f"bench_{run}",
            mongodb_keys_database=f"bench_{run}_keys",
            topic_prefix=f"bench{run}.",
        )
        latencies = asyncio.run(measure(settings, args.messages, args.interval))
    print(table(latencies, args.interval))  # noqa: T201 - the report


if __name__ == "__main__":
    main()
