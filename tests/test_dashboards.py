"""The web pages, over a real SQLite store filled through ingest and a reconciliation pass."""
from __future__ import annotations

import html
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine

from collector import auth
from collector.assurance import Assurance
from collector.db import make_engine, upgrade
from collector.evaluate import Reconciler
from collector.ingest import EventStore
from collector.model import parse_event
from collector.policy import Policy
from collector.queries import Reads
from collector.timeutil import to_us
from dashboards import charts
from dashboards.render import duration
from dashboards.session import COOKIE, safe_next
from dashboards.web import Pages

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
READ, INGEST_ONLY = "reader-token-1", "ingest-token-1"
EVIL = "<script>alert(1)</script>"
BEARER = {"Authorization": f"Bearer {READ}"}


class Clock:
    def __init__(self, at: datetime):
        self.at = at

    def __call__(self) -> int:
        return to_us(self.at)


def ev(event_id: str, source: str, type_: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "source": source, "type": type_, "occurred_at": at.isoformat(), **fields}


class Store:
    def __init__(self, engine: Engine, clock: Clock):
        self.engine, self.clock = engine, clock
        self.events = EventStore(engine, clock)

    def add(self, *events: dict[str, Any]) -> None:
        self.events.store([parse_event(e) for e in events])

    def reconcile(self) -> None:
        Reconciler(self.engine, Policy(), self.clock).run()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + timedelta(days=3))


@pytest.fixture
def store(sqlite_url: str, clock: Clock) -> Iterator[Store]:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    yield Store(engine, clock)
    engine.dispose()


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2)
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture
def make_client(aiohttp_client: Any, store: Store, executor: ThreadPoolExecutor) -> MakeClient:
    async def make(page_size: int = 50) -> Client:
        tokens = auth.Tokens({READ: ["read"], INGEST_ONLY: ["ingest"]})
        # The API's middleware sits in front, as in `revtrace serve`, to show that it lets the pages through.
        app = web.Application(middlewares=[auth.middleware(tokens)])
        pages = Pages(Reads(store.engine, Policy()), Assurance(store.engine), executor, tokens,
                      page_size=page_size)
        app.add_routes(pages.routes())
        client: Client = await aiohttp_client(app)
        return client
    return make


def landscape(store: Store, clock: Clock) -> None:
    """C-PAID runs to payment; C-EUR misses its invoice; C-SHORT is under-billed and never posted;
    C-LATE missed its invoice for a while (closed mismatch), then lacks a posting; EVIL misses its invoice."""
    day = timedelta(days=1)
    store.add(
        ev("o1", "crm", "order.booked", T0, contract_id="C-PAID", amount="1200.00", currency="USD", system="salesforce",
           refs={"order_id": "SO-1"}),
        ev("i1", "billing", "invoice.issued", T0 + timedelta(hours=2), contract_id="C-PAID", amount="1200.00",
           currency="USD", refs={"invoice_id": "INV-1"}, system="stripe"),
        ev("p1", "erp", "posting.created", T0 + timedelta(hours=2, minutes=30), amount="1200.00", currency="USD",
           refs={"invoice_id": "INV-1", "posting_id": "GL-1"}, system="netsuite"),
        ev("y1", "payment", "payment.succeeded", T0 + timedelta(days=2), amount="1200.00", currency="USD",
           refs={"invoice_id": "INV-1", "payment_id": "PAY-1"}),
        ev("o2", "crm", "order.booked", T0, contract_id="C-EUR", amount="500.00", currency="EUR"),
        ev("o3", "crm", "order.booked", T0, contract_id="C-SHORT", amount="300.00", currency="USD"),
        ev("i3", "billing", "invoice.issued", T0 + timedelta(hours=1), contract_id="C-SHORT", amount="250.00",
           currency="USD", refs={"invoice_id": "INV-3"}),
        ev("o4", "crm", "order.booked", T0, contract_id="C-LATE", amount="80.00", currency="USD"),
        ev("o5", "crm", "order.booked", T0, contract_id=EVIL, amount="10.00", currency="USD"),
    )
    store.reconcile()
    clock.at += day
    # Its invoice comes late, in another offset: the missing_invoice closes, a missing_posting opens later.
    store.add(ev("i4", "billing", "invoice.issued", (T0 + 2 * day).astimezone(timezone(timedelta(hours=2))),
                 contract_id="C-LATE", amount="80.00", currency="USD", refs={"invoice_id": "INV-4"}))
    store.reconcile()


class Cells(HTMLParser):
    """The text of every table body row, cell by cell, and every link in those rows."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.links: list[str] = []
        self._in_body = self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self.rows.append([])
        elif self._in_body and tag == "td":
            self._in_cell = True
            self.rows[-1].append("")
        elif self._in_body and tag == "a":
            self.links.append(dict(attrs).get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag == "td":
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.rows[-1][-1] += data.strip() + " " if data.strip() else ""


def table(body: str, heading: str) -> Cells:
    """The rows of the tables under the heading with this text, up to the next <h2>."""
    start = re.search(f"<h[12]>{re.escape(heading)}</h[12]>", body)
    assert start is not None, heading
    end = body.find("<h2>", start.end())
    parser = Cells()
    parser.feed(body[start.end():end if end != -1 else len(body)])
    return parser


async def page(client: Client, path: str, status: int = 200) -> str:
    resp = await client.get(path, headers=BEARER, allow_redirects=False)
    text = await resp.text()
    assert resp.status == status, text[:500]
    return text


# -- overview


async def test_overview_shows_open_mismatches_with_money_and_links(make_client: MakeClient, store: Store,
                                                                    clock: Clock) -> None:
    landscape(store, clock)
    client = await make_client()
    body = await page(client, "/")
    newest = table(body, "Newest open mismatches")
    eur = [r for r in newest.rows if r[0].strip() == "Missing invoice" and "C-EUR" in r[1]]
    assert len(eur) == 1
    assert eur[0][2].split() == ["500.00", "EUR"]
    assert "/contracts/C-EUR" in newest.links
    kinds = {r[0].strip(): r for r in table(body, "Open mismatches by kind").rows}
    assert kinds["Missing invoice"][1].strip() == "2"  # C-EUR and the <script> contract; C-LATE's closed
    assert kinds["Missing invoice"][2].split() == ["500.00", "EUR", "10.00", "USD"]
    assert kinds["Amount mismatch"][2].split() == ["50.00", "USD"]
    funnel = {r[0].strip(): r[1].strip() for r in table(body, "Contracts by furthest stage").rows}
    assert funnel == {"ordered": "2", "invoiced": "2", "posted": "0", "paid": "1", "all": "5"}
    # the headline figures, exactly as stored
    assert re.search(r"Booked</div><div class=\"v\">1590\.00<span class=\"cur\">USD", body)
    assert re.search(r"Leakage</div><div class=\"v\">500\.00<span class=\"cur\">EUR", body)
    assert 'data-figure="' in body and "plotly.min.js?v=" in body


async def test_overview_lists_the_newest_open_mismatches_first(make_client: MakeClient, store: Store,
                                                                clock: Clock) -> None:
    store.add(*(ev(f"old{i}", "crm", "order.booked", T0, contract_id=f"OLD-{i}", amount="1.00", currency="USD")
                for i in range(3)))
    store.reconcile()
    clock.at += timedelta(hours=1)
    store.add(*(ev(f"new{i}", "crm", "order.booked", T0, contract_id=f"NEW-{i:02d}", amount="2.00", currency="USD")
                for i in range(20)))
    store.reconcile()
    client = await make_client()
    rows = table(await page(client, "/"), "Newest open mismatches").rows
    assert len(rows) == 20
    assert all(r[1].startswith("NEW-") for r in rows)
    assert rows[0][3].strip() == "2024-03-04 10:00:00 UTC"


async def test_overview_of_an_empty_store_says_so(make_client: MakeClient) -> None:
    client = await make_client()
    body = await page(client, "/")
    assert "No open mismatches." in body and "No contracts yet." in body
    assert "plotly.min.js" not in body  # nothing to draw, nothing to load


def test_figures() -> None:
    funnel = json.loads(charts.stage_funnel({"ordered": 2, "invoiced": 1, "posted": 0, "paid": 4}) or "")
    assert funnel["data"][0]["x"] == [7, 5, 4, 4]  # reached at least this far
    assert charts.stage_funnel(dict.fromkeys(("ordered", "invoiced", "posted", "paid"), 0)) is None
    assert charts.risk_by_kind({}) is None
    risk = json.loads(charts.risk_by_kind(
        {"missing_invoice": {"count": 2, "amount_at_risk": {"EUR": "0.10", "USD": "5.00"}},
         "tax_mismatch": {"count": 1, "amount_at_risk": {"USD": "1.25"}}}) or "")
    assert [(t["name"], t["x"], t["text"]) for t in risk["data"]] == [
        ("EUR", [0.1, None], ["0.10 EUR", ""]), ("USD", [5.0, 1.25], ["5.00 USD", "1.25 USD"])]
    line = json.loads(charts.event_timeline([ev("<b>", "crm", "order.booked", T0, amount="1.00", currency="USD")])
                      or "")
    assert line["data"][0]["hovertext"] == ["order.booked · &lt;b&gt;<br>1.00 USD"]
    assert line["layout"]["xaxis"]["range"] == ["2024-03-01 08:00:00.000000", "2024-03-01 10:00:00.000000"]


def test_durations_read_as_people_say_them() -> None:
    assert [duration(s) for s in (None, 0, 42.4, 600, 725, 3600, 12_000, 86_400, 190_000, -90)] == [
        "—", "0 s", "42 s", "10 min", "12 min 5 s", "1 h", "3 h 20 min", "1 d", "2 d 4 h", "−1 min 30 s"]


# -- contract page


async def test_contract_page_shows_stages_events_and_open_and_closed_mismatches(
        make_client: MakeClient, store: Store, clock: Clock) -> None:
    landscape(store, clock)
    client = await make_client()
    body = await page(client, "/contracts/C-LATE")
    stages = {r[0].strip(): r for r in table(body, "Stages").rows}
    assert stages["ordered"][1].strip() == "2024-03-01 09:00:00 UTC"
    assert stages["invoiced"][1].strip() == "2024-03-03 09:00:00 UTC"  # given at +02:00, shown in UTC
    assert stages["invoiced"][2].split() == ["80.00", "USD"]
    assert stages["posted"][1].strip() == "not yet"
    lags = {r[0].strip(): r[1].strip() for r in table(body, "Lags").rows}
    assert lags["Order to invoice"] == "2 d"
    found = {(r[0].strip(), r[1].strip()) for r in table(body, "Mismatches").rows}
    assert found == {("Missing invoice", "closed"), ("Missing posting", "open")}
    closed = next(r for r in table(body, "Mismatches").rows if r[1].strip() == "closed")
    assert closed[4].strip() == "2024-03-05 09:00:00 UTC"
    events = table(body, "Events").rows
    assert [(r[1].strip(), r[2].strip()) for r in events] == [("order.booked", "crm"), ("invoice.issued", "billing")]
    assert "invoice_id INV-4" in events[1][7]
    assert '"occurred at (UTC)"' in html.unescape(body)  # the timeline figure is there


async def test_unknown_contract_is_404(make_client: MakeClient, store: Store, clock: Clock) -> None:
    landscape(store, clock)
    client = await make_client()
    body = await page(client, "/contracts/NOPE-1", status=404)
    assert "Unknown contract" in body and "NOPE-1" in body


async def test_contract_id_with_markup_is_escaped_everywhere(make_client: MakeClient, store: Store,
                                                             clock: Clock) -> None:
    landscape(store, clock)
    client = await make_client()
    overview = await page(client, "/")
    link = "/contracts/" + quote(EVIL, safe="")
    assert f'href="{link}"' in overview
    assert EVIL not in overview and html.escape(EVIL, quote=False) in overview
    contract = await page(client, link)
    assert EVIL not in contract and html.escape(EVIL, quote=False) in contract
    assert "<h1>Contract <code>&lt;script&gt;" in contract
    missing = await page(client, "/contracts/" + quote("<b>x</b>", safe=""), status=404)
    assert "<b>x</b>" not in missing and "&lt;b&gt;x&lt;/b&gt;" in missing


async def test_contract_id_with_a_slash_round_trips(make_client: MakeClient, store: Store) -> None:
    store.add(ev("s1", "crm", "order.booked", T0, contract_id="ACME/2024#7 ?", amount="5.00", currency="USD"))
    store.reconcile()
    client = await make_client()
    body = await page(client, "/contracts")
    href = "/contracts/" + quote("ACME/2024#7 ?", safe="")
    assert f'href="{href}"' in body
    assert "ACME/2024#7 ?" in await page(client, href)


# -- auth


async def test_pages_without_a_token_send_the_browser_to_login(make_client: MakeClient) -> None:
    client = await make_client()
    for path in ("/", "/contracts", "/contracts/C-1", "/mismatches?state=open"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 303, path
        assert resp.headers["Location"].startswith("/login?why=missing&next=")
    resp = await client.get("/mismatches?state=open")  # followed: the login form, with the reason
    body = await resp.text()
    assert resp.url.path == "/login"
    assert "Sign in to see that page." in body
    assert 'name="next" value="/mismatches?state=open"' in body


async def test_a_bad_bearer_token_is_sent_to_login_not_given_json(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.get("/", headers={"Authorization": "Bearer nope"}, allow_redirects=False)
    assert resp.status == 303 and "why=unknown" in resp.headers["Location"]
    resp = await client.get("/", headers={"Authorization": f"Bearer {INGEST_ONLY}"}, allow_redirects=False)
    assert resp.status == 303 and "why=scope" in resp.headers["Location"]


async def test_login_refuses_a_wrong_token_and_one_without_read(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.get("/login", params={"token": "wrong"}, allow_redirects=False)
    assert resp.status == 401
    assert "That token is not known" in await resp.text()
    assert COOKIE not in resp.cookies
    resp = await client.post("/login", data={"token": INGEST_ONLY}, allow_redirects=False)
    assert resp.status == 403
    assert "lacks the read scope" in await resp.text()
    assert COOKIE not in resp.cookies
    assert (await client.get("/", allow_redirects=False)).status == 303


async def test_login_with_a_read_token_sets_the_cookie_and_the_pages_open(make_client: MakeClient, store: Store,
                                                                          clock: Clock) -> None:
    landscape(store, clock)
    client = await make_client()
    resp = await client.get("/login", params={"token": READ}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}={READ};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    for path in ("/", "/contracts", "/contracts/C-PAID", "/mismatches"):
        resp = await client.get(path, allow_redirects=False)  # the cookie jar sends the cookie, no header
        assert resp.status == 200, path
    resp = await client.post("/logout", allow_redirects=False)
    assert resp.status == 303
    client.session.cookie_jar.update_cookies(resp.cookies)
    assert (await client.get("/", allow_redirects=False)).status == 303


async def test_login_form_goes_back_where_the_visitor_was_but_never_off_site(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.post("/login", data={"token": READ, "next": "/mismatches?kind=missing_invoice"},
                             allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/mismatches?kind=missing_invoice"
    for evil in ("//evil.example/", "https://evil.example/", "/\t/evil.example", "/\\evil.example"):
        resp = await client.get("/login", params={"token": READ, "next": evil}, allow_redirects=False)
        assert resp.headers["Location"] == "/", evil
    assert safe_next("/contracts/a%2Fb?x=1") == "/contracts/a%2Fb?x=1"


async def test_plotly_is_served_locally_with_a_long_cache(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.get("/static/plotly.min.js")  # no token: it is no business data
    assert resp.status == 200
    assert "javascript" in resp.headers["Content-Type"]
    assert "max-age=31536000" in resp.headers["Cache-Control"]
    body = await resp.read()
    assert len(body) > 1_000_000 and b"plotly.js" in body[:2000]
    assert (await client.get("/static/charts.js")).status == 200
    assert (await client.get("/static/nothing.js")).status == 404


# -- lists


async def test_mismatch_filter_by_kind_shows_only_that_kind(make_client: MakeClient, store: Store,
                                                            clock: Clock) -> None:
    landscape(store, clock)
    client = await make_client()
    everything = table(await page(client, "/mismatches"), "Mismatches").rows
    assert {r[0].strip() for r in everything} > {"Missing invoice"}
    rows = table(await page(client, "/mismatches?kind=missing_invoice"), "Mismatches").rows
    assert len(rows) == 3 and {r[0].strip() for r in rows} == {"Missing invoice"}
    rows = table(await page(client, "/mismatches?kind=missing_invoice&state=open"), "Mismatches").rows
    assert sorted(r[3].strip() for r in rows) == ["10.00 USD", "500.00 EUR"]
    body = await page(client, "/mismatches?kind=not_a_kind", status=400)
    assert "kind: unknown mismatch kind" in body


async def test_paging_follows_next_links_to_every_row_once(make_client: MakeClient, store: Store) -> None:
    store.add(*(ev(f"o{i}", "crm", "order.booked", T0, contract_id=f"K-{i:02d}", amount=f"{i}.00", currency="USD")
                for i in range(1, 8)))
    store.reconcile()
    client = await make_client(page_size=3)
    seen: list[str] = []
    path: str | None = "/mismatches?kind=missing_invoice&state=open"
    pages = 0
    while path is not None:
        body = await page(client, path)
        rows = table(body, "Mismatches").rows
        assert 0 < len(rows) <= 3
        seen += [r[2].strip() for r in rows]
        found = re.search(r'<a href="([^"]+)" rel="next">', body)
        path = html.unescape(found.group(1)) if found else None
        if path is not None:
            assert "kind=missing_invoice" in path and "state=open" in path and "cursor=" in path
        pages += 1
    assert pages == 3
    assert sorted(seen) == [f"K-{i:02d}" for i in range(1, 8)]
    assert "First page" in body


async def test_contract_list_filters_by_stage_and_open_mismatch(make_client: MakeClient, store: Store,
                                                                clock: Clock) -> None:
    landscape(store, clock)
    client = await make_client()
    body = await page(client, "/contracts?stage=paid")
    assert "C-PAID" in body and "C-EUR" not in body
    body = await page(client, "/contracts?mismatch=missing_posting")
    assert "C-SHORT" in body and "C-LATE" in body and "C-EUR" not in body and "C-PAID" not in body
    assert "No contracts match these filters." in await page(client, "/contracts?stage=posted")
