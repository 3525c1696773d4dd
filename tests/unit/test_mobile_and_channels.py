import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsuchi.domain.channels import check_plus_message_body, check_sms_body, sms_cost
from tsuchi.domain.mobile import national_form, normalise_mobile
from tsuchi.errors import BodyTooLong, InvalidInput, InvalidMobileNumber


@pytest.mark.parametrize(
    "raw", ["090-1234-5678", "+81 90 1234 5678", "09012345678", "+819012345678", "090 1234 5678"]
)
def test_common_forms_normalise_to_e164(raw: str) -> None:
    assert normalise_mobile(raw) == "+819012345678"


@pytest.mark.parametrize("raw", ["070-1111-2222", "080-3333-4444"])
def test_all_mobile_ranges(raw: str) -> None:
    assert normalise_mobile(raw).startswith(("+8170", "+8180"))


@pytest.mark.parametrize(
    "raw", ["03-1234-5678", "0120-123-456", "+1 650 253 0000", "abc", "", "090-1234-567", "9" * 40]
)
def test_non_mobile_numbers_are_refused_without_echoing_them(raw: str) -> None:
    with pytest.raises(InvalidMobileNumber) as e:
        normalise_mobile(raw)
    assert e.value.field == "mobile"
    if raw:
        assert raw not in str(e.value)


def test_national_form() -> None:
    assert national_form("+819012345678") == "090-1234-5678"


@pytest.mark.parametrize(
    ("text", "encoding", "parts"),
    [
        ("a" * 160, "gsm7", 1),
        ("a" * 161, "gsm7", 2),
        ("a" * 306, "gsm7", 2),
        ("a" * 307, "gsm7", 3),
        ("€" * 80, "gsm7", 1),  # escape characters count 2
        ("€" * 81, "gsm7", 2),
        ("a" * 152 + "€", "gsm7", 1),
        ("a" * 159 + "€", "gsm7", 2),
        ("あ" * 70, "ucs2", 1),
        ("あ" * 71, "ucs2", 2),
        ("あ" * 134, "ucs2", 2),
        ("あ" * 135, "ucs2", 3),
        ("a" * 69 + "あ", "ucs2", 1),  # one non-GSM character makes the whole text UCS-2
        ("😀" * 35, "ucs2", 1),  # outside the BMP: 2 UTF-16 units
        ("😀" * 36, "ucs2", 2),
        ("a" * 66 + "😀" + "a" * 10, "ucs2", 2),  # the surrogate pair is not split
    ],
)
def test_sms_segments(text: str, encoding: str, parts: int) -> None:
    cost = sms_cost(text)
    assert (cost.encoding, cost.parts) == (encoding, parts)


GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXT = "^{}\\[~]|€\f"


def reference_parts(text: str) -> tuple[str, int]:
    """An independent segment counter written from the GSM 03.38 / 3GPP 23.040 tables."""
    if all(c in GSM_BASIC or c in GSM_EXT for c in text):
        units = [2 if c in GSM_EXT else 1 for c in text]
        single, part, enc = 160, 153, "gsm7"
    else:
        units = [len(c.encode("utf-16-le")) // 2 for c in text]
        single, part, enc = 70, 67, "ucs2"
    if sum(units) <= single:
        return enc, 1
    n, used = 1, 0
    for u in units:
        if used + u > part:
            n, used = n + 1, 0
        used += u
    return enc, n


ALPHABETS = [GSM_BASIC.replace("\f", ""), GSM_EXT, "あいうえおカタカナ漢字。、", "😀🎉👍🏻", "abc "]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from(range(len(ALPHABETS))), min_size=1, max_size=4),
    st.integers(0, 2**32),
    st.integers(0, 800),
)
def test_segments_agree_with_independent_counter(choices: list[int], seed: int, n: int) -> None:
    rng = random.Random(seed)
    pool = "".join(ALPHABETS[i] for i in choices)
    text = "".join(rng.choice(pool) for _ in range(n))
    cost = sms_cost(text)
    assert (cost.encoding, cost.parts) == reference_parts(text)


def test_sms_body_limit() -> None:
    check_sms_body("あ" * 670)
    with pytest.raises(BodyTooLong) as e:
        check_sms_body("あ" * 671)
    assert e.value.field == "body.sms"
    with pytest.raises(BodyTooLong):
        check_sms_body("a" * 400, max_parts=2)


def test_plus_message_limits() -> None:
    check_plus_message_body("あ" * 2730, tuple(f"s{i}" for i in range(11)))
    with pytest.raises(BodyTooLong):
        check_plus_message_body("あ" * 2731)
    with pytest.raises(InvalidInput) as e:
        check_plus_message_body("hi", tuple(f"s{i}" for i in range(12)))
    assert e.value.field == "suggestions"
    with pytest.raises(InvalidInput):
        check_plus_message_body("hi", ("x" * 26,))


def test_attachments_rules() -> None:
    from tsuchi.domain.channels import MEDIA_MAX_BYTES, Location, Media, Stamp, check_attachments

    ok = check_attachments(
        [
            {
                "kind": "media",
                "url": "https://cdn.example/a.jpg",
                "mime_type": "image/jpeg",
                "size_bytes": MEDIA_MAX_BYTES,
            },
            {"kind": "location", "latitude": 35.68, "longitude": 139.76, "label": "本店"},
            {"kind": "stamp", "stamp_id": "thanks_01"},
        ]
    )
    assert [type(a) for a in ok] == [Media, Location, Stamp]
    bad = [
        (
            {
                "kind": "media",
                "url": "https://x/a",
                "mime_type": "image/png",
                "size_bytes": MEDIA_MAX_BYTES + 1,
            },
            "attachments.0.size_bytes",
        ),
        (
            {
                "kind": "media",
                "url": "https://x/a",
                "mime_type": "application/x-msdownload",
                "size_bytes": 10,
            },
            "attachments.0.mime_type",
        ),
        (
            {"kind": "media", "url": "http://x/a", "mime_type": "image/png", "size_bytes": 1},
            "attachments.0.url",
        ),
        ({"kind": "location", "latitude": 91, "longitude": 0}, "attachments.0.latitude"),
        ({"kind": "stamp", "stamp_id": "../x"}, "attachments.0.stamp_id"),
        ({"kind": "file"}, "attachments.0.kind"),
    ]
    for raw, field in bad:
        with pytest.raises(InvalidInput) as e:
            check_attachments([raw])
        assert e.value.field == field
    with pytest.raises(InvalidInput):
        check_attachments([{"kind": "stamp", "stamp_id": "a"}] * 11)
