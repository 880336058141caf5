"""`traffic-simulator`: play cross-channel journeys through a running Hilo and read them back.

Reads the platform's addresses and secrets from the environment, or from `--env-file` (what
`make run` writes to `.hilo/platform.env`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from traffic_simulator import omnichannel
from traffic_simulator.offers import judge
from traffic_simulator.people import people
from traffic_simulator.player import play
from traffic_simulator.readback import entries_held, queue_line, read_back, timeline
from traffic_simulator.settings import SimulatorSettings


async def simulate(settings: SimulatorSettings) -> int:
    crowd = people(settings.customers, settings.seed)
    print(f"Playing {len(crowd)} customers' journeys through every channel…")  # noqa: T201
    before = await omnichannel.entries_now(settings)
    held = await entries_held(crowd, settings)
    started = time.monotonic()
    report = await play(crowd, settings)
    sent = time.monotonic() - started
    print(f"\nSent {report.requests} requests in {sent:.1f}s; reading back…")  # noqa: T201
    result = await read_back(crowd, report.expected_entries, settings)
    per_channel = ", ".join(
        f"{name} {count}" for name, count in sorted(result.entries_per_channel.items())
    )
    lines = [
        "",
        "Summary (from the customer-profile API)",
        f"  people simulated        {len(crowd)}",
        f"  customers found         {len(result.customers)}",
        f"  merges                  {result.merges}",
        f"  journeys complete       {result.complete}/{len(crowd)}",
        f"  events lost             {result.missing}",
        f"  events duplicated       {result.duplicated}",
        f"  journey entries         {sum(result.entries_per_channel.values())} ({per_channel})",
        f"  refused requests        {len(report.failures)}",
        f"  requests sent again     {report.retries}",
        f"  chats a call can name   {result.chats - result.unnamed_chats}/{result.chats}",
        queue_line(result.waiting, datetime.now(UTC)),
    ]
    if result.unnamed_chats:
        lines.append(
            "    conversation ids differ from the channels': set HILO_SUBJECT_PEPPER to the "
            "platform's, or calls that continue a chat name none"
        )
    lines.extend(f"    {failure}" for failure in report.failures[:10])
    if result.sample:
        lines += ["", f"  One journey: {result.sample_name}", timeline(result.sample)]
    verdict = judge(report.plans, result.customer_of, result.mismatches)
    lines += ["", "Offers (prices quoted by the offers service; mismatches from the profile API)"]
    lines += [f"  offers unavailable: {problem}" for problem in report.offers_unavailable[:5]]
    lines += verdict.lines
    analytics = True
    try:
        entries = sum(result.entries_per_channel.values())
        measures = await omnichannel.read_measures(settings, before + entries - held)
        lines += omnichannel.report(measures)
    except omnichannel.AnalyticsUnavailable as exc:
        analytics = False
        lines += ["", f"Omnichannel: journey-analytics unavailable ({exc})"]
    print("\n".join(lines))  # noqa: T201
    healthy = (
        analytics
        and not report.failures
        and not report.offers_unavailable
        and verdict.healthy
        and result.complete == len(crowd)
        and result.duplicated == 0
        and not result.unnamed_chats
    )
    return 0 if healthy and len(result.customers) == len(crowd) else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="traffic-simulator", description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, help="e.g. .hilo/platform.env")
    parser.add_argument("--customers", type=int, help="how many people (HILO_SIM_CUSTOMERS)")
    args = parser.parse_args()
    overrides = {"customers": args.customers} if args.customers else {}
    settings = SimulatorSettings(_env_file=args.env_file, **overrides)
    sys.exit(asyncio.run(simulate(settings)))


if __name__ == "__main__":
    main()
