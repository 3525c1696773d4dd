"""Figure ``pii``: what encrypting personal data costs.

The same events are stored (and read back) twice in one fresh database:

* ``sealed``: through the engine's own event store, whose
  :class:`~tsuchi.infrastructure.mapper.PersonalDataMapper` seals every
  :class:`~tsuchi.domain.personal.Personal` value with AES-256-GCM under the
  account's data key (and opens it on reading);
* ``plain``: through a subclass of tsuchi's ``AggregateStore`` (own table
  ``tsuchi_plain_events``, same database, same ``eventsourcing-sqlalchemy``
  wiring) whose mapper writes each ``Personal`` value as its plaintext string
  instead, and reads it back as ``Personal``: identical events, no crypto.

Write: ``Account.Registered`` (three personal fields) for a set of accounts
(creating their data keys on the sealed side only),
then per message one transaction with ``Message.Requested`` (a personal
variable) and ``Message.Routed``, the engine's most common unit of work.
Read: every message loaded back through the repository.  The two stores
alternate in blocks of 100 messages (writing and reading) so drift affects
both alike.  ``ratio = sealed rate /
plain rate``; target: at most 20 % extra time, i.e. ``ratio >= 0.833``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper, StoredEvent

from benchmarks.common import (
    START,
    SYNTHETIC_NAME,
    Ctx,
    Result,
    open_engine,
    synthetic_mobile,
    throughput,
)
from tsuchi.domain.account import Account
from tsuchi.domain.message import Message
from tsuchi.domain.personal import Personal
from tsuchi.domain.template import template_id
from tsuchi.domain.values import Capability, Carrier, Channel, Purpose, Urgency
from tsuchi.infrastructure.mapper import PersonalDataMapper
from tsuchi.infrastructure.store import AggregateStore

NAME = "pii"
MIN_RATIO = 1 / 1.2
BLOCK = 100


class PlainMapper(PersonalDataMapper):
    """tsuchi's mapper with sealing replaced by plaintext (benchmark only)."""

    def _seal(self, value: Any, context: str) -> Any:
        if isinstance(value, Personal):
            return {"_plain_subject": value.subject.hex, "v": value.value}
        if isinstance(value, dict):
            return {k: self._seal(v, context) for k, v in value.items()}
        if isinstance(value, list):
            return [self._seal(v, context) for v in value]
        return value

    def _open(self, value: Any, context: str) -> Any:
        if isinstance(value, dict):
            if "_plain_subject" in value:
                return Personal(UUID(hex=value["_plain_subject"]), value["v"])
            return {k: self._open(v, context) for k, v in value.items()}
        if isinstance(value, list):
            return [self._open(v, context) for v in value]
        return value


class PlainStore(AggregateStore):
    name = "tsuchi_plain"

    def construct_mapper(self) -> Mapper[UUID]:
        return PlainMapper(self.construct_transcoder(), self.keys)


def _accounts(n: int) -> list[Account]:
    out = []
    for i in range(n):
        aid = uuid.uuid4()
        out.append(
            Account(
                id=aid,
                tenant="bench",
                customer_ref=Personal(aid, f"C{i}"),
                mobile=Personal(aid, "+81" + synthetic_mobile(i)[1:]),
                name=Personal(aid, SYNTHETIC_NAME),
                carrier=Carrier.DOCOMO,
                capability=Capability.UNKNOWN,
                time_zone="Asia/Tokyo",
                language="ja",
                at=START,
            )
        )
    return out


def _messages(sender: UUID, accounts: list[UUID], lo: int, hi: int, tag: str) -> list[Message]:
    tid = template_id(sender, "fraud_alert")
    out = []
    for j in range(lo, hi):
        account = accounts[j % len(accounts)]
        m = Message(
            sender_id=sender,
            idempotency_key=f"{tag}-{j}",
            tenant="bench",
            account_id=account,
            template_id=tid,
            template_name="fraud_alert",
            template_version=1,
            purpose=Purpose.SECURITY,
            urgency=Urgency.NORMAL,
            variables={"name": Personal(account, SYNTHETIC_NAME), "last4": "4242"},
            correlation_id=f"{tag}-{j}",
            requested_by="host",
            at=START,
        )
        m.route(Channel.PLUS_MESSAGE, Carrier.DOCOMO, {"rule": "security_always_allowed"}, START)
        out.append(m)
    return out


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(ctx: Ctx) -> list[Result]:
    n = ctx.sizes.pii_messages
    engine, _clock, _gw, url, _keys = open_engine(ctx)
    plain = PlainStore(keyring=engine.keyring, url=url)
    stores: dict[str, AggregateStore] = {"sealed": engine.store, "plain": plain}
    write = {"sealed": 0.0, "plain": 0.0}
    read = {"sealed": 0.0, "plain": 0.0}
    events = {"sealed": 0, "plain": 0}
    sizes = {"sealed": 0, "plain": 0}
    sender = uuid.uuid4()
    try:
        accounts = {k: _accounts(max(10, n // 10)) for k in stores}
        for key, store in stores.items():
            accts = accounts[key]

            def save_accounts(
                store: AggregateStore = store, accts: list[Account] = accts, key: str = key
            ) -> None:
                with store.session(commit=True):
                    if key == "sealed":  # data keys are part of what encryption costs
                        for a in accts:
                            store.keys.create(a.id, START)
                    store.save(*accts)

            write[key] += _timed(save_accounts)
            events[key] += len(accts)
        ids: dict[str, list[UUID]] = {"sealed": [], "plain": []}
        for lo in range(0, n, BLOCK):
            hi = min(n, lo + BLOCK)
            for key, store in stores.items():
                msgs = _messages(sender, [a.id for a in accounts[key]], lo, hi, key)

                def save_messages(
                    store: AggregateStore = store, msgs: list[Message] = msgs
                ) -> None:
                    for m in msgs:
                        with store.session(commit=True):
                            store.save(m)

                write[key] += _timed(save_messages)
                events[key] += 2 * len(msgs)
                ids[key].extend(m.id for m in msgs)
        for store in stores.values():
            store.keys.clear_cache()  # reading starts cold: data keys are unwrapped once each
        for lo in range(0, n, BLOCK):
            for key, store in stores.items():

                def load(
                    store: AggregateStore = store, mids: list[UUID] = ids[key][lo : lo + BLOCK]
                ) -> None:
                    with store.session(commit=False):
                        for mid in mids:
                            store.repository.get(mid)

                read[key] += _timed(load)
        for key, store in stores.items():
            recorder: Any = store.recorder
            sample = recorder.select_events(ids[key][0])
            sizes[key] = sum(len(e.state) for e in sample if isinstance(e, StoredEvent))
    finally:
        plain.close()
        engine.close()
    b = ctx.backend.name
    w = {k: events[k] / write[k] for k in write}
    r = {k: n / read[k] for k in read}
    note = (
        f"state bytes of one message's 2 events: sealed {sizes['sealed']}, plain {sizes['plain']}"
    )
    ctx.log(f"  pii write {w}, read {r}; {note}")
    return [
        throughput(
            f"{NAME}.write",
            b,
            events["sealed"],
            w["sealed"],
            "events/s",
            w["plain"],
            MIN_RATIO,
            note,
        ),
        throughput(f"{NAME}.read", b, n, r["sealed"], "messages/s", r["plain"], MIN_RATIO),
    ]
