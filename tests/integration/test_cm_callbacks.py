"""CM.com's documented callbacks, posted over loopback HTTP to tsuchi's ASGI app
(under a real uvicorn) in front of a real engine, on SQLite and PostgreSQL.

Every body starts from a fixture in tests/fixtures/cm/ (each names its source
page); only the fields that tie it to our message are changed.  The alert
itself goes out through CMGateway to the loopback CM server, which checks the
documented MT rules.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tsuchi import Engine, ManualClock, MessageStatus, Settings
from tsuchi.domain.message import gateway_reference
from tsuchi.infrastructure.cm_gateway import CMGateway
from tsuchi.serve import create_app

from .test_cm_gateway import TOKEN, FakeCM, _serve
from .world import build, count_events

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cm"
CALLBACK_TOKEN = "cm-callback-token-0123456789abcdefghij"
ALERT = ("1234", "海外ECサイト", 98000)


def fixture(name: str) -> Any:
    data = json.loads((FIXTURES / name).read_text())
    assert data["source"].startswith("https://developers.cm.com/")
    return copy.deepcopy(data["example"])


def status_json(reference: str, code: int, received: str) -> bytes:
    body = fixture("status_report.json")
    msg = body["messages"]["msg"]
    msg["reference"], msg["received"], msg["status"]["code"] = reference, received, str(code)
    return json.dumps(body).encode()


def status_xml(reference: str) -> bytes:
    raw = (FIXTURES / "status_report.xml").read_bytes()
    return raw.replace(b"OUR-MT-REFERENCE", reference.encode())


@pytest.fixture
def cm() -> Iterator[FakeCM]:
    server = FakeCM()
    _serve(server)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def cm_engine(settings: Settings, clock: ManualClock, cm: FakeCM) -> Iterator[Engine]:
    gw = CMGateway(TOKEN, url=cm.url, sleep=lambda _: None, rng=random.Random(1))
    s = settings.model_copy(update={"cm_webhook_token": CALLBACK_TOKEN, "gateway": "cm"})
    with Engine(s, clock=clock, gateway=gw) as e:
        yield e
    gw.close()


@pytest.fixture
def base_url(cm_engine: Engine) -> Iterator[str]:
    app = create_app(
        cm_engine.handle_webhook,
        cm=cm_engine.handle_cm_callback,
        cm_allow=cm_engine.settings.cm_webhook_allow,
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def asgi_post(
    app: Any, path: str, body: bytes, client: tuple[str, int] = ("127.0.0.1", 5555)
) -> httpx.Response:
    """One request to the ASGI app in process (no server), from ``client``."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://tsuchi") as c:
            return await c.post(path, content=body)

    return asyncio.run(go())


def post(base_url: str, route: str, body: bytes, ctype: str = "application/json") -> httpx.Response:
    url = f"{base_url}/webhooks/cm/{CALLBACK_TOKEN}/{route}"
    return httpx.post(url, content=body, headers={"content-type": ctype})


def raise_alert(engine: Engine) -> tuple[UUID, UUID, str]:
    w = build(engine)
    case = engine.raise_fraud_alert(w.sender, w.accounts[0], *ALERT, engine.now())
    mid = UUID(engine.fraud_case(case)["message_id"])
    assert engine.dispatch() == 1
    return case, mid, gateway_reference(mid, 1)


def test_fraud_alert_through_cm_delivered_read_and_card_block_by_suggestion_click(
    cm_engine: Engine, cm: FakeCM, base_url: str
) -> None:
    case, mid, ref = raise_alert(cm_engine)
    [request] = cm.requests
    sent = request["messages"]["msg"][0]
    assert cm.violations == [] and cm.tokens == [TOKEN]
    assert sent["reference"] == ref and len(ref) <= 32 and ref.isalnum()
    assert sent["to"] == [{"number": "00819011112222"}]

    r = post(base_url, "status", status_json(ref, 2, "2026-04-01T00:00:10"))
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert cm_engine.message(mid).status is MessageStatus.DELIVERED
    r = post(base_url, "status", status_xml(ref), "application/xml")
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    assert cm_engine.message(mid).status is MessageStatus.READ
    late = post(base_url, "status", status_json(ref, 2, "2026-04-01T00:00:10"))
    assert late.json() == {"accepted": 0, "duplicates": 1, "orphans": 0, "poison": 0}
    assert cm_engine.message(mid).status is MessageStatus.READ  # never regresses

    click = fixture("rcs_event_suggestion_click.json")
    click["messageContext"] = ref
    label = sent["richContent"]["suggestions"][1]
    click["event"]["custom"] = {"postbackdata": label["postbackdata"], "label": label["label"]}
    body = json.dumps(click).encode()
    assert post(base_url, "events", body).json()["accepted"] == 1
    assert cm_engine.fraud_case(case)["state"] == "card_block_requested"
    assert post(base_url, "events", body).json()["duplicates"] == 1  # CM retried it

    typing = json.dumps(fixture("rcs_event_is_typing.json")).encode()
    assert post(base_url, "events", typing).json() == {
        "accepted": 0,
        "duplicates": 0,
        "orphans": 0,
        "poison": 0,
    }


def test_unknown_status_code_and_textual_error_are_kept_never_refused(
    cm_engine: Engine, base_url: str
) -> None:
    _, mid, ref = raise_alert(cm_engine)
    assert post(base_url, "status", status_json(ref, 9, "2026-04-01T00:00:05")).status_code == 200
    timeline = cm_engine.message(mid).timeline
    assert timeline[-1].status == "unknown report" and "status:9" in timeline[-1].detail
    assert cm_engine.message(mid).status is MessageStatus.SUBMITTED
    failed = fixture("status_report.json")
    msg = failed["messages"]["msg"]
    msg["reference"], msg["status"] = ref, {"code": "3", "errorCode": "Unknown subscriber"}
    r = post(base_url, "status", json.dumps(failed).encode())
    assert r.status_code == 200 and r.json()["accepted"] == 1
    view = cm_engine.message(mid)
    assert any("Unknown subscriber" in e.detail for e in view.timeline)


def test_mo_reply_by_message_context_opts_out_and_from_an_unknown_number_is_kept_by_digest(
    cm_engine: Engine, base_url: str
) -> None:
    w = build(cm_engine)
    cm_engine.grant_consent(
        w.accounts[0], w.sender, "marketing", source="app", wording="キャンペーン", by="山田"
    )
    m = cm_engine.request_notice(w.sender, w.accounts[0], "campaign", idempotency_key="mk")
    cm_engine.dispatch()
    mo = fixture("mo_message.json")
    mo["messageContext"] = gateway_reference(m.id, 1)
    r = post(base_url, "inbound", json.dumps(mo).encode())
    assert r.status_code == 200 and r.json()["accepted"] == 1
    consent = cm_engine.consent(w.accounts[0], w.sender, "marketing")
    assert consent is not None and not consent.granted  # 停止 withdrew it

    stray = fixture("mo_message.json")
    del stray["messageContext"]
    stray["from"]["number"] = "00819099998888"  # no account has this number
    before = count_events(cm_engine)
    r = post(base_url, "inbound", json.dumps(stray).encode())
    assert r.status_code == 200 and r.json()["orphans"] == 1
    assert count_events(cm_engine) == before


def test_wrong_token_is_404_and_records_nothing(cm_engine: Engine, base_url: str) -> None:
    _, _, ref = raise_alert(cm_engine)
    before = count_events(cm_engine)
    body = status_json(ref, 2, "2026-04-01T00:00:10")
    for token in (CALLBACK_TOKEN[:-1] + "X", "short", CALLBACK_TOKEN + "0"):
        r = httpx.post(f"{base_url}/webhooks/cm/{token}/status", content=body)
        assert r.status_code == 404
    other = httpx.post(f"{base_url}/webhooks/cm/{CALLBACK_TOKEN}/other", content=body)
    assert other.status_code == 404
    assert count_events(cm_engine) == before


def test_unparseable_bodies_are_400_naming_the_field(cm_engine: Engine, base_url: str) -> None:
    before = count_events(cm_engine)
    assert post(base_url, "status", b"{").json()["field"] == "body"
    r = post(base_url, "events", json.dumps({"event": {"type": "SuggestionClick"}}).encode())
    assert (r.status_code, r.json()["field"]) == (400, "event.custom")
    assert post(base_url, "inbound", b"[]").status_code == 400
    assert count_events(cm_engine) == before


def test_allow_list_checks_the_peer_and_trusts_forwarding_only_from_proxies(
    cm_engine: Engine,
) -> None:
    allow = [ipaddress.ip_network("192.0.2.0/24")]
    proxies = [ipaddress.ip_network("10.0.0.0/8")]
    app = create_app(
        cm_engine.handle_webhook,
        cm=cm_engine.handle_cm_callback,
        cm_allow=allow,
        trusted_proxies=proxies,
    )
    path = f"/webhooks/cm/{CALLBACK_TOKEN}/events"
    typing = json.dumps(fixture("rcs_event_is_typing.json")).encode()
    assert asgi_post(app, path, typing, ("127.0.0.1", 5555)).status_code == 403
    assert asgi_post(app, path, typing, ("192.0.2.7", 5555)).status_code == 200

    async def forwarded(peer: str, xff: str) -> int:
        transport = httpx.ASGITransport(app=app, client=(peer, 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://tsuchi") as c:
            r = await c.post(path, content=typing, headers={"x-forwarded-for": xff})
            return r.status_code

    assert asyncio.run(forwarded("10.1.2.3", "192.0.2.9")) == 200  # a trusted proxy
    assert asyncio.run(forwarded("10.1.2.3", "192.0.2.9, 198.51.100.1")) == 403
    assert asyncio.run(forwarded("198.51.100.1", "192.0.2.9")) == 403  # not a proxy


BODIES = st.one_of(
    st.binary(max_size=512),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=40),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
        ),
        max_leaves=20,
    ).map(lambda v: json.dumps(v).encode()),
)


@hsettings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(route=st.sampled_from(["status", "inbound", "events"]), body=BODIES, wrong=st.booleans())
def test_random_bodies_never_5xx_and_a_wrong_token_never_persists(
    cm_engine: Engine, route: str, body: bytes, wrong: bool
) -> None:
    app = create_app(cm_engine.handle_webhook, cm=cm_engine.handle_cm_callback)
    token = CALLBACK_TOKEN[::-1] if wrong else CALLBACK_TOKEN
    before = count_events(cm_engine)
    r = asgi_post(app, f"/webhooks/cm/{token}/{route}", body)
    assert r.status_code < 500
    if wrong:
        assert r.status_code == 404
        assert count_events(cm_engine) == before


def test_a_body_that_makes_applying_fail_is_kept_as_poison_and_answered_done(
    cm_engine: Engine, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import select

    from tsuchi.infrastructure.tables import orphan_reports

    _, _, ref = raise_alert(cm_engine)

    def explode(*_: object) -> str:
        raise RuntimeError("a bug this body triggers")

    monkeypatch.setattr(cm_engine.services.inbound, "apply", explode)
    body = status_json(ref, 2, "2026-04-01T00:00:10")
    r = post(base_url, "status", body)
    assert r.status_code == 200 and r.json()["poison"] == 1
    with cm_engine.store.session(commit=False) as s:
        rows = s.execute(select(orphan_reports.c.reference, orphan_reports.c.code)).all()
    assert [(row[0].split(":")[:2], row[1]) for row in rows] == [
        (["poison", "status"], "RuntimeError")
    ]
    assert ref not in rows[0][0] and "0081" not in rows[0][0]  # a digest, never the body
