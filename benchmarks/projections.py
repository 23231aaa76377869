"""The projections on PostgreSQL at scale, beside the raw limits of the same run.

    python -m benchmarks.projections [--dsn DSN] [--events 1000000]

Stores ``--events`` case events (cases of three items at county, township and village halls of
益阳市, each taken in, accepted or corrected, handled, decided, concluded, delivered, rated and
archived, some rated badly and rectified, business times spread over January-March 2026),
then prints, each beside a raw limit measured in the same run:

- raw notification-log read rate: notifications/s read with ``select_notifications`` in the
  projections' batches, as they are and decoded to domain events (as the projections need);
- catch-up: events/s from an empty projection to the end of the log, committed batch by batch
  with their tracking records (both projections, one after the other), beside the read rate
  (goal >= 0.3x) and beside the raw COPY rate of rows the size of a case row;
- rebuild: the same in one transaction (``tongban projections rebuild``);
- the dashboard's main page at that size: the time to compute its figures and to render the
  page (median of 20), beside a full scan of the cases view (``SELECT count(*)``).

The events are stored directly as the application's aggregates would store them, not through
signed commands (the projections read only the events; signing is measured in
``benchmarks.intake``). Without ``--dsn`` a throwaway PostgreSQL with durable (default)
settings is started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx

from benchmarks.baselines import benchmark_database, format_ratio, postgres_copy_rate
from hub.domain.case import Case, step_time
from hub.domain.codec import event_mapper
from hub.domain.items import Catalogue
from hub.domain.regions import RegionCode
from hub.domain.values import (
    Actor,
    ApplicantCommitments,
    CrossRegionMode,
    DeliveryMethod,
    IntakeChannel,
    Material,
    Rating,
    SealedApplicant,
)
from hub.domain.workdays import CHINA_TIME
from hub.projections.node import open_projections
from hub.projections.queries import Names
from hub.settings import Settings
from hub.web.app import WebContext, create_app, dashboard_data

#: (item, the level's hall region) — the item is decided where it is taken in.
ITEMS = (
    ("070303001000", "430902000000"),  # 户口迁移, county, promised 5
    ("000305001000", "430903000000"),  # 食品经营许可, county (赫山区), promised 10
    ("200202001000", "430902104000"),  # 老年人优待证, township, immediate
)
_DIGEST = "ab" * 32
_MATERIAL = Material("居民身份证", _DIGEST, "application/pdf", 4096)
_APPLICANT = SealedApplicant(ApplicantCommitments(_DIGEST, _DIGEST, _DIGEST), b"")


def _case(number: int, catalogue: Catalogue, received: datetime) -> tuple[Case, int]:
    """One case's whole life at business times from ``received``; its event count."""
    code, region = ITEMS[number % len(ITEMS)]
    item = catalogue.get(code)
    actor = Actor(f"bench-{region}", f"op-{number % 7}", region)
    steps = iter(received + timedelta(hours=hours) for hours in range(0, 200, 3))
    with step_time(next(steps)):
        case = Case.submit(
            case_id=uuid4(), actor=actor, item_code=item.code, item_name=item.name,
            kind=item.kind, mode=CrossRegionMode.LOCAL,
            intake_region=RegionCode(region), competent_region=RegionCode(region),
            applicant=_APPLICANT, materials=(_MATERIAL,), promised_days=item.promised_days,
            statutory_days=item.statutory_days, produces_certificate=False,
            channel=IntakeChannel.ONLINE if number % 5 == 0 else IntakeChannel.WINDOW,
        )  # fmt: skip
    for step, run in (
        ("correct", lambda: case.request_correction(actor, ("户口簿",), "一次性告知")),
        ("resubmit", lambda: case.resubmit(actor, (_MATERIAL,))),
        ("accept", lambda: case.accept(actor)),
        ("handle", lambda: case.start_handling(actor)),
        ("decide", lambda: case.decide(actor, False, "不符合条件")),
        ("conclude", lambda: case.conclude(actor)),
        ("deliver", lambda: case.deliver(actor, DeliveryMethod.WINDOW, "")),
        ("rate", lambda: case.rate(actor, _rating(number), "评价")),
        ("rectify", lambda: case.complete_rectification(actor, "已整改", "回访满意")),
        ("archive", lambda: case.archive(actor)),
    ):
        if step in ("correct", "resubmit") and number % 10:
            continue
        if step == "accept" and number % 10 == 0:
            continue  # a resubmission accepts the case
        if step == "rectify" and not _rating(number).is_bad:
            continue
        with step_time(next(steps)):
            run()
    return case, case.version


def _rating(number: int) -> Rating:
    return Rating.NOT_SATISFIED if number % 20 == 0 else Rating.VERY_SATISFIED


def store_events(app: Any, events: int) -> int:
    """Store cases until ``events`` events are stored; returns how many."""
    catalogue = app.catalogue
    start = datetime(2026, 1, 5, 9, tzinfo=CHINA_TIME)
    stored, number, batch = 0, 0, []
    every = timedelta(days=80) / max(1, events // 9)
    while stored < events:
        case, count = _case(number, catalogue, start + every * number)
        batch.append(case)
        stored += count
        number += 1
        if len(batch) == 500:
            app.save(*batch)
            batch = []
    if batch:
        app.save(*batch)
    return stored


def read_rate(app: Any, *, decode: bool) -> tuple[float, int]:
    """Notifications/s read in batches of 500 (and decoded), over the whole log."""
    mapper = event_mapper()
    began, position, read = time.perf_counter(), 0, 0
    while True:
        batch = app.recorder.select_notifications(
            start=position, limit=500, inclusive_of_start=False
        )
        if not batch:
            break
        if decode:
            for notification in batch:
                mapper.to_domain_event(notification)
        read += len(batch)
        position = batch[-1].id
    return read / (time.perf_counter() - began), read


def _row_bytes(projections: Any) -> int:
    def read(cursor: Any) -> int:
        cursor.execute("SELECT avg(pg_column_size(projection_cases.*)) FROM projection_cases")
        (size,) = cursor.fetchone()
        return int(size or 300)

    return int(projections.store.read(read))


def _median_ms(run: Any, times: int = 20) -> float:
    samples = []
    for _ in range(times):
        began = time.perf_counter()
        run()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def _supervisor_app(app: Any, projections: Any) -> Any:
    """The web application, each request carrying a supervisor's certificate of 4309."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from hub.pki import Role, init_ca

    with tempfile.TemporaryDirectory(prefix="tongban-bench-ca-") as directory:
        issued = init_ca(Path(directory), "bench").issue(Role.SUPERVISOR, "bench.4309")
    pem = (
        x509.load_pem_x509_certificate(issued.certificate_pem)
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    context = WebContext(
        projections.store, Names(app.regions, app.catalogue), app.catalogue, "43",
        lambda: datetime(2026, 3, 31, 10, tzinfo=CHINA_TIME),
    )  # fmt: skip
    web = create_app(context)

    async def with_certificate(scope: Any, receive: Any, send: Any) -> None:
        scope = {**scope, "extensions": {"tls": {"client_cert_chain": [pem]}}}
        await web(scope, receive, send)

    return with_certificate, context


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="PostgreSQL to use (default: start a throwaway one)")
    parser.add_argument("--events", type=int, default=1_000_000, help="case events to store")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        dsn, database = benchmark_database(stack, args.dsn)
        settings = Settings(
            data_dir=Path(stack.enter_context(tempfile.TemporaryDirectory())),
            database_url=database,
        )
        inprocess: Any = importlib.import_module("tests.harness.inprocess")
        node = inprocess.InProcessNode.start(settings)
        stack.callback(node.close)
        app = node.app
        for _code, region in ITEMS:
            node.add_hall(f"bench-{region}", region)
        began = time.perf_counter()
        stored = store_events(app, args.events)
        print(f"stored {stored:,} case events in {time.perf_counter() - began:.0f} s", flush=True)

        raw, total = read_rate(app, decode=False)
        read, _ = read_rate(app, decode=True)
        projections = open_projections(app, node_region="43")
        stack.callback(projections.close)
        projections.create_tables()

        catch_ups = {}
        for name, runner in projections.runners.items():
            began = time.perf_counter()
            runner.catch_up()
            catch_ups[name] = total / (time.perf_counter() - began)
        rebuilds = {}
        for name, runner in projections.runners.items():
            began = time.perf_counter()
            runner.rebuild()
            rebuilds[name] = total / (time.perf_counter() - began)
        copy = postgres_copy_rate(dsn, row_bytes=_row_bytes(projections))

        web, context = _supervisor_app(app, projections)
        now = context.clock()
        data_ms = _median_ms(lambda: dashboard_data(context, "4309", now))

        async def get_page() -> None:
            transport = httpx.ASGITransport(app=web)
            async with httpx.AsyncClient(transport=transport, base_url="https://node") as client:
                response = await client.get("/dashboard")
                assert response.status_code == 200, response.text[:200]

        page_ms = _median_ms(lambda: asyncio.run(get_page()))

        def scan() -> None:
            projections.store.read(
                lambda cursor: cursor.execute("SELECT count(*) FROM projection_cases")
            )

        scan_ms = _median_ms(scan)

        print("\nraw limits of this machine, this run:")
        print(f"  notification log read (batches of 500): {raw:,.0f} events/s ({total:,} events)")
        print(f"  notification log read and decoded to domain events: {read:,.0f} events/s")
        print(f"  {copy}")
        print(f"\nprojections over {total:,} stored events:")
        for name, rate in catch_ups.items():
            format_ratio(f"  catch-up {name}", rate, "events/s", "log read", raw,
                         baseline_unit="events/s")  # fmt: skip
            format_ratio(f"  catch-up {name}", rate, "events/s", "log read and decoded", read,
                         baseline_unit="events/s")  # fmt: skip
        format_ratio("  catch-up cases", catch_ups["cases"], "events/s",
                     "raw COPY, case-row size", copy)  # fmt: skip
        for name, rate in rebuilds.items():
            format_ratio(f"  rebuild {name}", rate, "events/s", "log read", raw,
                         baseline_unit="events/s")  # fmt: skip
            format_ratio(f"  rebuild {name}", rate, "events/s", "log read and decoded", read,
                         baseline_unit="events/s")  # fmt: skip
        print(f"\ndashboard main page at {total:,} events (median of 20):")
        print(f"  figures {data_ms:.1f} ms, whole page {page_ms:.1f} ms | full scan of the "
              f"cases view {scan_ms:.1f} ms | ratio {page_ms / scan_ms:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
