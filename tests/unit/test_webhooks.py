"""Inbound webhooks: parsing CM status reports (JSON, XML) and replies,
authentication, size limits, and hostile input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsuchi.errors import InvalidInput, KeyMaterialError
from tsuchi.infrastructure.webhooks import (
    MAX_BODY,
    WebhookRejected,
    authenticate,
    parse_status_webhook,
    read_status_webhook,
    sign,
)

SECRET = "s3cret-webhook-key-0123456789"
NOW = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
JSON = "application/json"
XML = "application/xml"
NUMBER = "+819012345678"


def status_json(*msgs: dict[str, object]) -> bytes:
    msg: object = msgs[0] if len(msgs) == 1 else list(msgs)
    return json.dumps({"messages": {"msg": msg}}).encode()


def msg(
    ref: str, code: int | str, error: object = "", received: str = "2026-04-01T09:00:00Z"
) -> dict[str, object]:
    return {
        "received": received,
        "to": NUMBER,
        "reference": ref,
        "status": {"code": code, "errorCode": error, "errorDescription": "x"},
        "operator": "44010",
    }


# -- parsing ----------------------------------------------------------------------------------
def test_json_single_status_report() -> None:
    [r] = parse_status_webhook(JSON, status_json(msg("abc:1", 2)))
    assert (r.reference, r.kind, r.code, r.permanent) == ("abc:1", "delivered", "", False)
    assert r.at == datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


def test_json_list_maps_every_cm_status_code() -> None:
    body = status_json(*(msg(f"m:{c}", c) for c in range(5)))
    kinds = [r.kind for r in parse_status_webhook("application/json; charset=utf-8", body)]
    assert kinds == ["accepted", "failed", "delivered", "failed", "read"]


def test_rejected_is_permanent_and_error_code_kept() -> None:
    [r] = parse_status_webhook(JSON, status_json(msg("m:1", "1", error="15")))
    assert r.kind == "failed" and r.permanent and r.code == "15"


def test_naive_and_offset_times_become_utc() -> None:
    body = status_json(
        msg("a:1", 2, received="2026-04-01T18:00:00+09:00"),
        msg("b:1", 2, received="2026-04-01T09:00:00"),
    )
    a, b = parse_status_webhook(JSON, body)
    assert a.at == b.at == NOW


def test_number_is_not_kept_in_reports() -> None:
    reports = parse_status_webhook(JSON, status_json(msg("a:1", 2)))
    assert NUMBER not in repr(reports)


XML_BODY = b"""<?xml version="1.0" encoding="utf-8"?>
<MESSAGES SENT="2026-04-01T09:00:05">
  <MSG RECEIVED="2026-04-01T09:00:00">
    <TO>+819012345678</TO>
    <REFERENCE>abc:1</REFERENCE>
    <STATUS><CODE>2</CODE><ERRORCODE></ERRORCODE><ERRORDESCRIPTION>Delivered</ERRORDESCRIPTION></STATUS>
    <OPERATOR>44010</OPERATOR>
  </MSG>
  <MSG>
    <RECEIVED>2026-04-01T09:01:00Z</RECEIVED>
    <REFERENCE>def:2</REFERENCE>
    <STATUS><CODE>3</CODE><ERRORCODE>7</ERRORCODE></STATUS>
  </MSG>
</MESSAGES>"""


def test_xml_status_reports_elements_and_attributes() -> None:
    a, b = parse_status_webhook("text/xml; charset=utf-8", XML_BODY)
    assert (a.reference, a.kind, a.at) == ("abc:1", "delivered", NOW)
    assert (b.reference, b.kind, b.code) == ("def:2", "failed", "7")


def test_xml_single_lowercase_message() -> None:
    body = (
        b"<messages><msg><received>2026-04-01T09:00:00Z</received><reference>r:1</reference>"
        b"<status><code>4</code></status></msg></messages>"
    )
    [r] = parse_status_webhook(XML, body)
    assert (r.reference, r.kind) == ("r:1", "read")


def test_reply_and_postback() -> None:
    reply = {
        "type": "reply",
        "reference": "m:1",
        "text": "これは私です",
        "received": "2026-04-01T09:00:00Z",
    }
    postback = {
        "type": "postback",
        "reference": "m:1",
        "postbackdata": "not_me",
        "received": "2026-04-01T09:00:00Z",
    }
    [r] = parse_status_webhook(JSON, json.dumps(reply).encode())
    assert (r.kind, r.text, r.postback) == ("reply", "これは私です", "")
    assert "これは私です" not in repr(r)
    both = parse_status_webhook(JSON, json.dumps([reply, postback]).encode())
    assert [(x.kind, x.postback) for x in both] == [("reply", ""), ("reply", "not_me")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{", "body"),
        (b"[]", "body"),
        (b'{"messages": []}', "messages"),
        (b'{"messages": {"msg": []}}', "messages.msg"),
        (json.dumps({"messages": {"msg": {**msg("a:1", 2), "reference": ""}}}), "reference"),
        (status_json(msg("a:1", 2, received="yesterday")), "messages.msg.received"),
        (status_json(msg("a:1", 2), msg("b:1", 2) | {"status": "x"}), "messages.msg[1].status"),
        (b'{"type": "reply", "reference": "m:1", "received": "2026-04-01"}', "body.text"),
        (b'{"type": "postback", "reference": "m:1", "received": "2026-04-01"}', "postbackdata"),
        (b'{"type": "vote"}', "body.type"),
    ],
)
def test_malformed_payloads_are_400_naming_the_field(body: bytes | str, field: str) -> None:
    raw = body.encode() if isinstance(body, str) else body
    with pytest.raises(WebhookRejected) as info:
        parse_status_webhook(JSON, raw)
    assert info.value.status == 400 and field in info.value.field
    assert isinstance(info.value, InvalidInput)


def test_error_messages_never_quote_values() -> None:
    body = status_json(msg("a:1", 2, received=NUMBER))
    with pytest.raises(WebhookRejected) as info:
        parse_status_webhook(JSON, body)
    assert NUMBER not in str(info.value)


def test_unknown_content_type_is_415() -> None:
    with pytest.raises(WebhookRejected) as info:
        parse_status_webhook("text/plain", b"hello")
    assert info.value.status == 415


def test_oversized_body_is_413() -> None:
    with pytest.raises(WebhookRejected) as info:
        parse_status_webhook(JSON, b" " * (MAX_BODY + 1))
    assert info.value.status == 413
    with pytest.raises(WebhookRejected) as info:
        parse_status_webhook(JSON, b"{}" * 10, max_body=8)
    assert info.value.status == 413


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<messages><msg><reference>&lol4;</reference></msg></messages>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE m [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<messages><msg><reference>&xxe;</reference></msg></messages>"""

BARE_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE messages SYSTEM "http://127.0.0.1:9/evil.dtd">
<messages/>"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY, BARE_DTD])
def test_entity_expansion_and_dtds_are_refused(body: bytes) -> None:
    with pytest.raises(WebhookRejected) as info:
        parse_status_webhook(XML, body)
    assert info.value.status == 400 and "DTD" in info.value.rule


def test_deeply_nested_input_is_a_400_not_a_crash() -> None:
    for content_type, body in [
        (JSON, b"[" * 200_000),
        (JSON, b'{"messages": {"msg": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"),
        (XML, b"<messages>" + b"<a>" * 50_000 + b"</a>" * 50_000 + b"</messages>"),
    ]:
        with pytest.raises(WebhookRejected):
            parse_status_webhook(content_type, body)


# -- authentication ---------------------------------------------------------------------------
BODY = status_json(msg("abc:1", 2))


def test_signed_request_is_accepted() -> None:
    authenticate({"X-Tsuchi-Signature": sign(BODY, SECRET, TS)}, BODY, SECRET, NOW)
    headers = {"x-tsuchi-signature": sign(BODY, SECRET, TS - 200), "content-type": JSON}
    [r] = read_status_webhook(headers, BODY, secret=SECRET, now=NOW)
    assert r.reference == "abc:1"


def test_rotated_secret_second_v1_accepted() -> None:
    old = sign(BODY, "an-older-secret-0123456789", TS).split(",")[1]
    header = f"{sign(BODY, SECRET, TS)},{old}"
    authenticate({"X-Tsuchi-Signature": header}, BODY, "an-older-secret-0123456789", NOW)


def rejected(headers: dict[str, str], body: bytes = BODY) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as info:
        authenticate(headers, body, SECRET, NOW)
    assert info.value.status == 401
    return info.value


def test_missing_signature_is_401() -> None:
    assert rejected({}).field == "authorization"


def test_forged_signature_is_401() -> None:
    rejected({"X-Tsuchi-Signature": sign(BODY, "another-secret-0123456789", TS)})
    rejected({"X-Tsuchi-Signature": f"t={TS},v1={'0' * 64}"})
    rejected({"X-Tsuchi-Signature": "garbage"})
    rejected({"X-Tsuchi-Signature": f"t={TS}"})


def test_altered_body_is_401() -> None:
    header = sign(BODY, SECRET, TS)
    rejected({"X-Tsuchi-Signature": header}, BODY.replace(b'"code": 2', b'"code": 3'))


def test_replayed_old_or_future_timestamp_is_401() -> None:
    assert "tolerance" in rejected({"X-Tsuchi-Signature": sign(BODY, SECRET, TS - 301)}).rule
    rejected({"X-Tsuchi-Signature": sign(BODY, SECRET, TS + 301)})
    later = NOW + timedelta(days=7)
    with pytest.raises(WebhookRejected):
        authenticate({"X-Tsuchi-Signature": sign(BODY, SECRET, TS)}, BODY, SECRET, later)


def test_token_mode_only_when_switched_on() -> None:
    authenticate({"X-Tsuchi-Token": SECRET}, BODY, SECRET, NOW, allow_token=True)
    with pytest.raises(WebhookRejected):
        authenticate({"X-Tsuchi-Token": SECRET[:-1]}, BODY, SECRET, NOW, allow_token=True)
    with pytest.raises(WebhookRejected):
        authenticate({"X-Tsuchi-Token": SECRET}, BODY, SECRET, NOW)  # off by default
    with pytest.raises(WebhookRejected):
        authenticate({"X-Tsuchi-Token": SECRET}, BODY, SECRET, NOW, allow_token=False)


def test_a_present_but_wrong_signature_is_not_rescued_by_a_token() -> None:
    rejected({"X-Tsuchi-Signature": f"t={TS},v1={'0' * 64}", "X-Tsuchi-Token": SECRET})


def test_short_secret_is_refused() -> None:
    with pytest.raises(KeyMaterialError):
        authenticate({"X-Tsuchi-Token": ""}, BODY, "", NOW)


def test_read_checks_size_before_auth_and_auth_before_parsing() -> None:
    with pytest.raises(WebhookRejected) as info:
        read_status_webhook({}, b"x" * 20, secret=SECRET, now=NOW, max_body=10)
    assert info.value.status == 413
    with pytest.raises(WebhookRejected) as info:
        read_status_webhook({"content-type": JSON}, b"{", secret=SECRET, now=NOW)
    assert info.value.status == 401
    bad = b"{"
    headers = {"X-Tsuchi-Signature": sign(bad, SECRET, TS), "Content-Type": JSON}
    with pytest.raises(WebhookRejected) as info:
        read_status_webhook(headers, bad, secret=SECRET, now=NOW)
    assert info.value.status == 400


# -- fuzz -------------------------------------------------------------------------------------
CONTENT_TYPES = st.sampled_from([JSON, XML, "text/xml", "application/vnd.x+json", "text/plain"])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)
near_valid = st.fixed_dictionaries(
    {
        "messages": st.fixed_dictionaries(
            {
                "msg": st.fixed_dictionaries(
                    {},
                    optional={
                        "reference": json_values,
                        "received": json_values | st.datetimes().map(datetime.isoformat),
                        "status": st.fixed_dictionaries(
                            {}, optional={"code": json_values, "errorCode": json_values}
                        )
                        | json_values,
                    },
                )
                | json_values
            }
        )
    }
) | st.fixed_dictionaries(
    {"type": st.sampled_from(["reply", "postback"]) | json_values},
    optional={
        "reference": json_values,
        "text": json_values,
        "postbackdata": json_values,
        "received": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(content_type=CONTENT_TYPES, body=st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes_only_ever_raise_webhook_rejected(
    content_type: str, body: bytes
) -> None:
    try:
        parse_status_webhook(content_type, body)
    except WebhookRejected:
        pass


@settings(max_examples=300, deadline=None)
@given(data=near_valid | json_values)
def test_fuzz_json_shapes_only_ever_raise_webhook_rejected(data: object) -> None:
    try:
        parse_status_webhook(JSON, json.dumps(data).encode())
    except WebhookRejected as exc:
        assert exc.status == 400


@settings(max_examples=200, deadline=None)
@given(
    headers=st.dictionaries(
        st.sampled_from(["X-Tsuchi-Signature", "X-Tsuchi-Token", "Other"]), st.text(max_size=120)
    ),
    body=st.binary(max_size=64),
)
def test_fuzz_auth_headers_only_ever_raise_webhook_rejected(
    headers: dict[str, str], body: bytes
) -> None:
    try:
        authenticate(headers, body, SECRET, NOW)
    except WebhookRejected as exc:
        assert exc.status == 401


def test_unknown_status_codes_and_textual_error_codes_are_kept_not_refused() -> None:
    # CM retries a refused report for days and then drops it: a status code it
    # may add later, or an errorCode filled from a description, is kept raw.
    body = status_json(msg("a:1", 9), msg("b:1", 3, error="Unknown subscriber"))
    reports = parse_status_webhook("application/json", body)
    assert [(r.kind, r.code) for r in reports] == [
        ("unknown", "status:9"),
        ("failed", "Unknown subscriber"),
    ]


def test_a_textual_error_code_never_stores_a_number_it_quotes() -> None:
    body = status_json(msg("a:1", 2, error="Rejected 0090-1234-5678 (+81 90 1234 5678)"))
    (report,) = parse_status_webhook("application/json", body)
    assert report.code == "Rejected # (#)"
    assert "5678" not in (report.code or "")


def _cm_fixture(name: str) -> Any:
    path = Path(__file__).parent.parent / "fixtures" / "cm" / name
    return json.loads(path.read_text())["example"]


def test_cms_own_mo_examples_parse() -> None:
    from tsuchi.infrastructure.cm_callbacks import parse_inbound

    media = parse_inbound(json.dumps(_cm_fixture("mo_message_media.json")).encode())
    assert media.text == "" and media.context is None
    assert [(m.mime_type, m.url) for m in media.media] == [
        ("image/png", "https://temp.com/adsadsa")
    ]
    text = parse_inbound(json.dumps(_cm_fixture("mo_message_text.json")).encode())
    assert text.text and text.at.tzinfo is not None and text.media == ()
