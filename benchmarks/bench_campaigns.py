"""Campaigns benchmark: triggers over every customer, 100k messages queued, SMTP delivery.

    python benchmarks/bench_campaigns.py [--customers 1000000]

Reads a copy of the service benchmark's store (ingested, fitted, scored, customers with
e-mail addresses: ``bench_service.prepare``). Three figures, each against its target:

- trigger evaluation and audience of the seven example campaigns (every trigger kind),
  four days after the scores' date: the customers' fields read once, then each
  campaign's firings;
- a broadcast to at least 100,000 customers decided, rendered and written to the outbox
  (``limit=0``: queued, nothing sent);
- delivery of 5,000 of those messages to an SMTP server on loopback (aiosmtpd in its
  own process, accepting and discarding), messages a second.

One run each, in this process (no peer: no library here sends campaigns).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TRIGGERS_TARGET_S = 10.0
QUEUE_TARGET_S = 30.0
QUEUE_MESSAGES = 100_000
DELIVERY_TARGET = 200.0
DELIVERED = 5_000

BROADCAST = """
[defaults]
sender = "Shop <shop@example.com>"
caps = { day = 100, week = 100, month = 100 }

[[campaign]]
name = "newsletter"
trigger = { kind = "broadcast", at = "AT" }
channel = "email"
subject = "News for {{ customer.name or 'you' }}"
text = \"\"\"Hello {{ customer.name or 'there' }},

You are one of our {{ customer.segment }}. Your last order was on {{ customer.last_order_at }}.

Unsubscribe: {{ unsubscribe_url }}
\"\"\"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(n_customers: int) -> list[dict]:
    from bench_service import prepare
    from retain.campaigns import example_path, run_campaigns
    from retain.campaigns.definitions import parse_campaigns
    from retain.campaigns.triggers import customer_fields, due
    from retain.store import Store
    from run import peak_mb

    source, _ = prepare(n_customers)
    db = source.with_name("campaigns.duckdb")
    shutil.copy(source, db)
    Path(str(db) + ".wal").unlink(missing_ok=True)
    rows: list[dict] = []
    with Store(db) as store:
        # four days after the scores' date: next-purchase windows have opened by then, and
        # a week after the last orders (post-purchase) is within the catch-up days
        scored = store.scalar("SELECT max(as_of) FROM customer_scores")
        day = scored + dt.timedelta(days=4)
        noon = dt.datetime.combine(day, dt.time(12), dt.UTC)
        # the newsletter switched on and dated today, so that every trigger kind runs
        examples = parse_campaigns(
            example_path()
            .read_text()
            .replace("enabled = false", "enabled = true")
            .replace('at = "2026-01-05T10:00"', f'at = "{day}T10:00"')
        )
        start = time.perf_counter()
        frame = customer_fields(store)
        fields_s = time.perf_counter() - start
        fired = {}
        for campaign in examples.campaigns:
            fired[campaign.name] = len(due(store, frame, campaign, day, noon))
        triggers_s = time.perf_counter() - start
        rows.append(
            {
                "name": f"trigger evaluation and audience, the 7 example campaigns over "
                f"{len(frame):,} customers (customer fields {fields_s:.2f} s)",
                "seconds": round(triggers_s, 2),
                "firings": json.dumps(fired),
                "target": f"< {TRIGGERS_TARGET_S:.0f} s",
                "met": triggers_s < TRIGGERS_TARGET_S,
                "peak_mb": peak_mb(),
            }
        )
        # the broadcast's audience: the smallest segments that hold the target together
        sizes = frame["segment"].value_counts(ascending=True)
        chosen: list[str] = []
        for name in sizes.index:
            if sizes[chosen].sum() >= QUEUE_MESSAGES * 1.3:  # opted-out ones are not queued
                break
            chosen.append(str(name))
        del frame

        text = BROADCAST.replace("AT", f"{day}T10:00").replace(
            'channel = "email"',
            f'audience = {{ segments = {json.dumps(chosen)} }}\nchannel = "email"',
        )
        broadcast = parse_campaigns(text)
        start = time.perf_counter()
        result = run_campaigns(store, broadcast, now=noon, limit=0)
        queue_s = time.perf_counter() - start
        queued = int(store.scalar("SELECT count(*) FROM campaign_outbox WHERE status = 'queued'"))
        rows.append(
            {
                "name": f"a broadcast to {len(chosen)} segments decided, rendered and queued in "
                f"the outbox: {queued:,} messages ({result.counts['suppressed']:,} suppressed: "
                "opted out)",
                "seconds": round(queue_s, 2),
                "messages": queued,
                "target": f"{QUEUE_MESSAGES:,} messages < {QUEUE_TARGET_S:.0f} s",
                "met": queued >= QUEUE_MESSAGES and queue_s < QUEUE_TARGET_S,
                "peak_mb": peak_mb(),
            }
        )

        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                f"127.0.0.1:{port}",
                "-c",
                "aiosmtpd.handlers.Sink",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for(port)
            from retain.campaigns.channels import SmtpChannel, parse_smtp_url

            smtp = SmtpChannel(parse_smtp_url(f"smtp://127.0.0.1:{port}"), "shop@example.com")
            start = time.perf_counter()
            sent = run_campaigns(
                store, broadcast, now=noon, limit=DELIVERED, channels={"email": smtp}
            )
            deliver_s = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait()
        rate = sent.counts["sent"] / deliver_s
        rows.append(
            {
                "name": f"delivery of {sent.counts['sent']:,} queued messages to an SMTP server on "
                "loopback (aiosmtpd in its own process), outbox marks included",
                "seconds": round(deliver_s, 2),
                "messages_per_s": round(rate),
                "target": f">= {DELIVERY_TARGET:.0f} messages/s",
                "met": rate >= DELIVERY_TARGET,
                "peak_mb": peak_mb(),
            }
        )
    return rows


def _wait_for(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the SMTP server on port {port} did not start")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    args = parser.parse_args()
    for row in run(args.customers):
        print(json.dumps(row))
