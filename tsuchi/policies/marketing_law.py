"""特定電子メール法 (Act on Regulation of Transmission of Specified Electronic Mail):
every advertising message must show the sender's name, how to refuse further
messages, and a contact.  A marketing template version is refused at approval
unless each channel's body carries all three.
"""

from __future__ import annotations

from tsuchi.errors import InvalidInput

OPT_OUT_WORDS = ("停止", "配信停止", "STOP", "stop", "Stop", "オプトアウト", "{opt_out}")


def check_advertising_duties(
    bodies: dict[str, str], display_name: str, sms_sender_id: str, contact: str
) -> None:
    for channel, body in bodies.items():
        field = f"body.{channel}"
        if display_name not in body and sms_sender_id not in body:
            raise InvalidInput(field, "a marketing message must show the sender's name")
        if not any(word in body for word in OPT_OUT_WORDS):
            raise InvalidInput(field, "a marketing message must say how to refuse further messages")
        if contact not in body:
            raise InvalidInput(field, "a marketing message must show the sender's contact")
