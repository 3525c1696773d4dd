"""The engine end to end against a loopback server speaking CM.com's API, on
SQLite and PostgreSQL: submit, signed status webhooks, replies, fallback to
SMS, retries under injected 5xx and timeouts, never two submits for one attempt."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from tsuchi import Engine, ManualClock, MessageStatus, Settings, errors
from tsuchi.domain.message import gateway_reference
from tsuchi.domain.values import Channel
from tsuchi.infrastructure.cm_gateway import CMGateway, GatewayUnavailable
from tsuchi.infrastructure.webhooks import sign

from .test_cm_gateway import TOKEN, FakeCM, _serve
from .world import build

SECRET = "webhook-secret-0123456789"


@pytest.fixture
def cm() -> Iterator[FakeCM]:
    server = FakeCM()
    _serve(server)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def cm_engine(settings: Settings, clock: ManualClock, cm: FakeCM) -> Iterator[Engine]:
    gw = CMGateway(
        TOKEN,
        url=cm.url,
        timeout=httpx.Timeout(1.0),
        sleep=lambda _: None,
        rng=random.Random(1),
        failure_threshold=50,
    )
    s = settings.model_copy(update={"webhook_secret": SECRET})
    with Engine(s, clock=clock, gateway=gw) as e:
        yield e
    gw.close()


def webhook(engine: Engine, payload: object) -> object:
    body = json.dumps(payload).encode()
    headers = {
        "content-type": "application/json",
        "x-tsuchi-signature": sign(body, SECRET, int(engine.now().timestamp())),
    }
    return engine.handle_webhook(headers, body)


def status(ref: str, code: int, at: str = "2026-04-01T00:00:10Z") -> dict[str, object]:
    return {
        "messages": {
            "msg": {"received": at, "to": "00", "reference": ref, "status": {"code": code}}
        }
    }


FRAUD = {"name": "山田太郎", "last4": "1234", "amount": 52000}


def test_submit_reports_reply_over_http(cm_engine: Engine, cm: FakeCM) -> None:
    w = build(cm_engine)
    m = cm_engine.request_notice(
        w.sender, w.accounts[0], "fraud_alert", FRAUD, idempotency_key="cm-1", urgency="urgent"
    )
    assert cm_engine.dispatch() == 1
    ref = gateway_reference(m.id, 1)
    body = cm.requests[-1]["messages"]["msg"][0]
    assert body["reference"] == ref and body["allowedChannels"] == ["RCS"]
    assert [s["label"] for s in body["richContent"]["suggestions"]] == [
        "はい、私です",
        "いいえ、身に覚えがありません",
    ]
    webhook(cm_engine, status(ref, 2))
    webhook(cm_engine, status(ref, 4, "2026-04-01T00:01:00Z"))
    webhook(cm_engine, status(ref, 2))  # late duplicate: no regression
    assert cm_engine.message(m.id).status is MessageStatus.READ
    webhook(
        cm_engine,
        {
            "type": "postback",
            "reference": ref,
            "text": "はい、私です",
            "postbackdata": "はい、私です",
            "received": "2026-04-01T00:02:00Z",
        },
    )
    assert cm_engine.message(m.id).timeline[-1].status == "reply"
    assert cm.processed[ref] == 1


def test_not_capable_falls_back_to_sms_over_http(cm_engine: Engine, cm: FakeCM) -> None:
    w = build(cm_engine)
    cm.not_capable.add("+819011112222")
    m = cm_engine.request_notice(
        w.sender, w.accounts[0], "fraud_alert", FRAUD, idempotency_key="cm-2"
    )
    cm_engine.dispatch()
    cm_engine.dispatch()
    after = cm_engine.message(m.id)
    assert after.channel is Channel.SMS and after.attempts == 2
    channels = [r["messages"]["msg"][0]["allowedChannels"] for r in cm.requests]
    assert channels == [["RCS"], ["SMS"]]
    assert (
        cm.processed[gateway_reference(m.id, 1)] == 1
        and cm.processed[gateway_reference(m.id, 2)] == 1
    )


def test_5xx_are_retried_and_each_attempt_submitted_once(cm_engine: Engine, cm: FakeCM) -> None:
    w = build(cm_engine)
    cm.script.extend([("status", 503), ("status", 500)])
    ids = [
        cm_engine.request_notice(w.sender, a, "note", {"memo": "明細"}, idempotency_key=f"r{i}").id
        for i, a in enumerate(w.accounts)
    ]
    assert cm_engine.dispatch() == 3
    assert len(cm.requests) == 3  # two failed tries, then success
    for mid in ids:
        assert cm.processed[gateway_reference(mid, 1)] == 1
        assert cm_engine.message(mid).status is MessageStatus.SUBMITTED


def test_timeout_is_not_resent_and_ttl_falls_back(
    cm_engine: Engine, cm: FakeCM, clock: ManualClock
) -> None:
    w = build(cm_engine)
    cm.script.append(("sleep", 1.5))  # longer than the client's timeout
    m = cm_engine.request_notice(
        w.sender, w.accounts[0], "note", {"memo": "x"}, idempotency_key="slow"
    )
    cm_engine.dispatch()
    ref = gateway_reference(m.id, 1)
    assert cm.received[ref] == 1  # ambiguous: never sent a second time
    assert cm_engine.message(m.id).status is MessageStatus.SUBMITTED
    clock.advance(cm_engine.settings.delivery_ttl["normal"] + timedelta(seconds=1))
    cm_engine.sweep()
    cm_engine.sweep()
    assert cm_engine.message(m.id).channel is Channel.SMS
    assert cm.received[ref] == 1 and cm.processed[gateway_reference(m.id, 2)] == 1


def test_gateway_outage_hands_work_back(settings: Settings, clock: ManualClock) -> None:
    gw = CMGateway(
        TOKEN,
        url="http://127.0.0.1:9/v1.0/message",
        timeout=httpx.Timeout(0.5),
        sleep=lambda _: None,
        max_attempts=2,
    )
    with Engine(settings, clock=clock, gateway=gw) as e:
        w = build(e)
        e.request_notice(w.sender, w.accounts[0], "note", {"memo": "x"}, idempotency_key="o")
        with pytest.raises(GatewayUnavailable):
            e.dispatch()
        assert e.pending_dispatch() == 1
        assert e.dispatch() == 0  # paused, not hammered
        clock.advance(timedelta(seconds=31))
        with pytest.raises(GatewayUnavailable):
            e.dispatch()
        assert e.pending_dispatch() == 1
    gw.close()


def test_media_location_and_stamps_reach_the_aggregator(cm_engine: Engine, cm: FakeCM) -> None:
    w = build(cm_engine)
    attachments = [
        {
            "kind": "media",
            "url": "https://cdn.example/map.png",
            "mime_type": "image/png",
            "size_bytes": 2048,
        },
        {"kind": "location", "latitude": 35.68, "longitude": 139.76, "label": "避難所"},
    ]
    v = cm_engine.draft_template(
        w.sender,
        "evacuation",
        purpose="security",
        plus_message_text="避難所はこちらです。",
        sms_text="避難所のご案内",
        attachments=attachments,
        author="alice",
    )
    cm_engine.approve_template(w.sender, "evacuation", v, "bob")
    cm_engine.request_notice(w.sender, w.accounts[0], "evacuation", idempotency_key="ev")
    cm_engine.dispatch()
    conversation = cm.requests[-1]["messages"]["msg"][0]["richContent"]["conversation"]
    assert conversation[1]["media"]["mimeType"] == "image/png"
    assert conversation[2]["location"]["label"] == "避難所"
    with pytest.raises(errors.InvalidInput) as e:
        cm_engine.draft_template(
            w.sender,
            "huge",
            purpose="security",
            plus_message_text="x",
            sms_text="x",
            author="alice",
            attachments=[
                {
                    "kind": "media",
                    "url": "https://x/v.mp4",
                    "mime_type": "video/mp4",
                    "size_bytes": 200 * 1024 * 1024,
                }
            ],
        )
    assert e.value.field == "attachments.0.size_bytes"
