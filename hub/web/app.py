"""The node's web pages (Starlette, Jinja2 templates, Chart.js), served over HTTPS by the node.

``/dashboard``
    The supervisors' dashboard (电子监察): open, overdue and near-deadline cases, the on-time
    rate and satisfaction of the month, volumes per level and per hall, cross-province flows,
    a 30-day trend of cases taken in and concluded, the last six months' rates, the recent
    warnings and the month's best windows (红旗窗口). Only for a caller whose client
    certificate (from the node's CA) is a supervisor's — who sees its region and below — or an
    auditor's (the whole node); 401 without one, 403 outside its region. No personal data: case
    ids, items, halls, windows and times only.
``/public/halls/{hall_id}``
    A hall's public screen (电子显示屏, 公开栏), for anyone: the published guide of every item
    the hall takes in (八公开: name, legal basis, conditions, materials, procedure, promised and
    statutory time limits, fee basis and standard) and today's volumes. It reloads itself every
    minute.
``/``
    An index of the public screens (and the dashboard's address).

Every figure comes from the projections (:mod:`hub.projections.queries`); "now" is the node's
time when the page is asked for. Pages carry a Content-Security-Policy that allows the node's
own scripts and styles only: the charts' data travel as JSON in the page, not as script.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from hub.domain.items import Catalogue, ServiceItem
from hub.domain.regions import Level, RegionCode
from hub.domain.workdays import CHINA_TIME
from hub.errors import InvalidInput, TongbanError
from hub.pki import Role
from hub.projections import queries, report
from hub.projections.appointments import appointment_counts
from hub.projections.queries import CaseFilter, Names
from hub.projections.store import ProjectionStore
from hub.web.certificates import CertificateFeed
from hub.web.tls import caller_identity

_HERE = Path(str(resources.files("hub.web")))

#: The security headers of every page.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class WebContext:
    """What the pages read: the projections, names, the catalogue and the node's clock."""

    store: ProjectionStore
    names: Names
    catalogue: Catalogue
    node_region: str
    clock: Callable[[], datetime]
    #: Why the projections stopped, if they did.
    failure: Callable[[], str | None] = lambda: None
    #: The status list and trust bundle for verifiers (``hub.web.certificates``); None: not
    #: served (a node without a certificate-issuer key).
    certificates: CertificateFeed | None = None


class Refused(Exception):
    """A page the caller may not see (401 or 403), with the reason shown to them."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _scope(request: Request, context: WebContext) -> str:
    """The region the caller may see, narrowed by ``?region=`` (within it)."""
    identity = caller_identity(request.scope)
    if identity is None:
        raise Refused(401, "present a supervisor's or an auditor's certificate of this node")
    if identity.role not in (Role.SUPERVISOR, Role.AUDITOR):
        raise Refused(403, f"a {identity.role.value} certificate does not open the dashboard")
    own = RegionCode.parse(identity.region or context.node_region)
    asked = request.query_params.get("region", "")
    try:
        region = context.names.regions.validate(asked, "region") if asked else own
    except InvalidInput as error:
        raise Refused(403, str(error)) from None
    if not own.contains(region):
        raise Refused(403, f"{identity.name} supervises {own.short} and the regions inside it")
    return region.short


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def _rounded(rate: float | None) -> float | None:
    return None if rate is None else round(rate * 100, 1)


def dashboard_data(context: WebContext, region: str, now: datetime) -> dict[str, Any]:
    """Everything the dashboard shows, as JSON-ready values."""
    store, names = context.store, context.names
    today = now.astimezone(CHINA_TIME).date()
    month_start = today.replace(day=1)
    counted = queries.counts(store, region=region, as_of=now)
    _, month = queries.statistics(
        store, names, region=region, by="month", from_day=month_start.isoformat()
    )
    levels, _ = queries.statistics(
        store, names, region=region, by="level", from_day=month_start.isoformat()
    )
    halls, _ = queries.statistics(
        store, names, region=region, by="hall", from_day=month_start.isoformat()
    )
    first_day = today - timedelta(days=29)
    days, _ = queries.statistics(
        store, names, region=region, by="day", from_day=first_day.isoformat()
    )
    six = _month_back(month_start, 5)
    months, _ = queries.statistics(store, names, region=region, by="month", from_day=six)
    by_day = {row.key: row.figures for row in days}
    trend_days = [(first_day + timedelta(days=n)).isoformat() for n in range(30)]
    by_level = {row.key: row.figures["received"] for row in levels}
    busiest = sorted(halls, key=lambda row: (-row.figures["received"], row.key))[:10]
    overdue = queries.cases(
        store, region=region, as_of=now, wanted=CaseFilter(overdue=True), page_size=20
    ).entries
    near = queries.cases(
        store, region=region, as_of=now, wanted=CaseFilter(near_deadline=True), page_size=20
    ).entries
    warnings = queries.warnings(store, region=region, page_size=10).entries
    ranking = queries.rank_windows(
        store, names, region=region, month=month_start.isoformat()[:7], limit=5
    )
    # 预约办: the month's appointments of the region and the no-shows (爽约) among them.
    booked = appointment_counts(store, first=month_start, last=today, region=region)
    return {
        "region": region,
        "region_name": names.regions.full_name(RegionCode.parse(region)),
        "as_of": report.when(now),
        "position": queries.position(store, "cases"),
        "cards": {
            "open": counted.open,
            "overdue": counted.overdue,
            "near_deadline": counted.near_deadline,
            "paused": counted.paused,
            "open_rectifications": counted.open_rectifications,
            "received": month["received"],
            "on_time_rate": _percent(month.rate("on_time", "concluded")),
            "satisfaction_rate": _percent(month.rate("satisfied", "rated")),
            "online_rate": _percent(month.rate("online", "received")),
            "active_rating_rate": _percent(month.rate("rated", "delivered")),
            "appointments": sum(entry.booked for entry in booked),
            "no_shows": sum(entry.no_show for entry in booked),
        },
        "charts": {
            "levels": {
                "labels": [level.label for level in Level],
                "values": [by_level.get(level.name, 0) for level in Level],
            },
            "halls": {
                "labels": [row.label for row in busiest],
                "values": [row.figures["received"] for row in busiest],
            },
            "trend": {
                "labels": [day[5:] for day in trend_days],
                "received": [by_day[d]["received"] if d in by_day else 0 for d in trend_days],
                "concluded": [by_day[d]["concluded"] if d in by_day else 0 for d in trend_days],
            },
            "rates": {
                "labels": [row.key for row in months],
                # (a month with nothing concluded or rated has no rate: a gap, not 0 %)
                "on_time": [_rounded(row.figures.rate("on_time", "concluded")) for row in months],
                "satisfaction": [
                    _rounded(row.figures.rate("satisfied", "rated")) for row in months
                ],
            },
            "cross": {
                "labels": ["跨省通办 收件(出)", "跨省通办 办理(入)", "就近办", "帮代办", "上门办"],
                "values": [
                    month["cross_province_out"],
                    month["cross_province_in"],
                    month["nearby"],
                    month["agent"],
                    month["home_visit"],
                ],
            },
        },
        "overdue": [_case(row, now) for row in overdue],
        "near_deadline": [_case(row, now) for row in near],
        "warnings": [
            {
                "case_id": w.case_id,
                "kind": w.kind.name,
                "due": report.when(w.due_at),
                "recorded": report.when(w.recorded_at),
                "hall": w.hall_id,
                "item": w.item_name,
            }
            for w in warnings
        ],
        "ranking": [
            {
                "rank": w.rank,
                "hall": w.hall_name,
                "window": w.window,
                "received": w.received,
                "on_time_rate": _percent(w.on_time_rate),
                "satisfaction_rate": _percent(w.satisfaction_rate),
            }
            for w in ranking
        ],
    }


def _month_back(first: date, months: int) -> str:
    year, month = first.year, first.month - months
    while month <= 0:
        month += 12
        year -= 1
    return date(year, month, 1).isoformat()


def _case(row: queries.CaseRow, now: datetime) -> dict[str, Any]:
    used = row.working_days_used(now)
    return {
        "case_id": row.case_id,
        "item": row.item_name,
        "hall": row.holder,
        "window": row.holder_window,
        "received": report.when(row.received_at),
        "due": report.when(row.due_at),
        "used": "" if math.isnan(used) else f"{used:.1f}/{row.promised_days}",
        "warnings": [kind.name for kind in row.warnings],
    }


def _items_of_hall(catalogue: Catalogue, region: str) -> list[ServiceItem]:
    """The items a hall at ``region`` takes in: those decided at its level or above."""
    level = RegionCode(region).level
    return sorted(
        (item for item in catalogue if item.competent_level <= level),
        key=lambda item: (-item.competent_level, item.code),
    )


def create_app(context: WebContext) -> Starlette:
    """The web application of a node."""
    templates = Jinja2Templates(directory=str(_HERE / "templates"))

    def page(request: Request, name: str, values: dict[str, Any], status: int = 200) -> Response:
        response = templates.TemplateResponse(request, name, values, status_code=status)
        response.headers.update(HEADERS)
        return response

    def refused(request: Request, error: Refused) -> Response:
        return page(request, "refused.html", {"reason": error.reason, "status": error.status},
                    error.status)  # fmt: skip

    async def index(request: Request) -> Response:
        halls = queries.halls(context.store)
        return page(
            request,
            "index.html",
            {"halls": sorted((hall_id, name) for hall_id, (name, _r, _w) in halls.items())},
        )

    async def dashboard(request: Request) -> Response:
        try:
            region = _scope(request, context)
        except Refused as error:
            return refused(request, error)
        stopped = context.failure()
        if stopped:
            return refused(request, Refused(503, f"the projections stopped: {stopped}"))
        data = dashboard_data(context, region, context.clock())
        return page(request, "dashboard.html", {"data": data})

    async def public_screen(request: Request) -> Response:
        hall_id = request.path_params["hall_id"]
        halls = queries.halls(context.store)
        if hall_id not in halls:
            return refused(request, Refused(404, f"no hall {hall_id} at this node"))
        name, region, windows = halls[hall_id]
        now = context.clock()
        today = now.astimezone(CHINA_TIME).date().isoformat()
        rows, _ = queries.statistics(
            context.store, context.names, region=RegionCode(region).short, by="hall",
            from_day=today, to_day=today,
        )  # fmt: skip
        figures = next((row.figures for row in rows if row.key == hall_id), queries.Figures())
        return page(
            request,
            "public.html",
            {
                "hall": {"id": hall_id, "name": name, "windows": windows,
                         "region": context.names.regions.full_name(RegionCode(region))},
                "today": today,
                "now": report.when(now),
                "figures": figures,
                "items": _items_of_hall(context.catalogue, region),
            },
        )  # fmt: skip

    async def root(request: Request) -> Response:
        return RedirectResponse("/index")

    async def failure(request: Request, error: Exception) -> Response:
        if isinstance(error, TongbanError):
            return refused(request, Refused(400, str(error)))
        raise error

    return Starlette(
        routes=[
            Route("/", root),
            Route("/index", index),
            Route("/dashboard", dashboard),
            Route("/public/halls/{hall_id}", public_screen),
            Mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static"),
            *(context.certificates.routes() if context.certificates else []),
        ],
        exception_handlers={TongbanError: failure},
    )


__all__ = ["HEADERS", "WebContext", "create_app", "dashboard_data"]
