"""Accounts: the customers notices go to, and the blind index that finds them.

Every personal field is stored under the customer's own data key; look-ups by
mobile number or customer reference go through keyed digests
(:mod:`tsuchi.infrastructure.sql.lookup`), never through plaintext.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tsuchi.application import validation as v
from tsuchi.application.context import Context
from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.application.views import AccountView
from tsuchi.domain.account import Account
from tsuchi.domain.mobile import normalise_mobile
from tsuchi.domain.personal import Personal
from tsuchi.domain.values import Capability, Carrier, parse_carrier
from tsuchi.errors import IdempotencyConflict, InvalidInput, UnknownAccount
from tsuchi.infrastructure.sql import Session
from tsuchi.infrastructure.sql import lookup as lookup_table


@dataclass(frozen=True)
class AccountSpec:
    """One customer to register, validated."""

    tenant: str
    customer_ref: str = field(repr=False)
    e164: str = field(repr=False)
    name: str = field(repr=False)
    carrier: Carrier = Carrier.UNKNOWN
    capability: Capability = Capability.UNKNOWN
    time_zone: str = "Asia/Tokyo"
    language: str = "ja"


def account_spec(
    tenant: str,
    customer_ref: str,
    mobile: str,
    name: str,
    carrier: str = "unknown",
    capability: str = "unknown",
    time_zone: str = "Asia/Tokyo",
    language: str = "ja",
) -> AccountSpec:
    """Check one customer's fields; :class:`InvalidInput` names the first bad one."""
    v.tenant(tenant)
    v.text(customer_ref, "customer_ref", 64)
    v.text(name, "name", 100)
    e164 = normalise_mobile(mobile)
    c = parse_carrier(carrier)
    try:
        cap = Capability(capability)
    except ValueError:
        raise InvalidInput("capability", "must be yes, no or unknown") from None
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidInput("time_zone", "must be an IANA time zone name") from None
    if not isinstance(language, str) or not v.LANG_RE.match(language):
        raise InvalidInput("language", "must be a language code such as ja or en")
    return AccountSpec(tenant, customer_ref, e164, name, c, cap, time_zone, language)


class Accounts:
    def __init__(self, ctx: Context, uow: UnitOfWork) -> None:
        self.ctx = ctx
        self.uow = uow

    def get(self, account_id: UUID) -> Account:
        """The account, inside a unit of work; :class:`UnknownAccount` if none."""
        return self.uow.get(Account, account_id, UnknownAccount)

    def register(self, spec: AccountSpec) -> UUID:
        return self.uow.run(lambda s: self._register(s, [spec])[0])

    def register_many(self, customers: Iterable[dict[str, str]], chunk: int = 500) -> list[UUID]:
        ids: list[UUID] = []
        batch: list[AccountSpec] = []
        for i, c in enumerate(customers):
            try:
                batch.append(account_spec(**c))
            except InvalidInput as e:
                raise type(e)(f"customers[{i}].{e.field}", e.rule) from None
            except TypeError:
                raise InvalidInput(f"customers[{i}]", "unknown or missing fields") from None
            if len(batch) >= chunk:
                ids += self._register_batch(batch)
                batch = []
        if batch:
            ids += self._register_batch(batch)
        return ids

    def _register_batch(self, batch: list[AccountSpec]) -> list[UUID]:
        return self.uow.run(lambda s: self._register(s, batch))

    def _register(self, s: Session, specs: Sequence[AccountSpec]) -> list[UUID]:
        now = self.ctx.now()
        ids: list[UUID] = []
        accounts: list[Account] = []
        rows: list[dict[str, str]] = []
        seen: dict[tuple[str, str], UUID] = {}
        pending_mobile: dict[str, set[UUID]] = {}  # numbers of this batch's new accounts
        for x in specs:
            ref_digest = self.ctx.digest(lookup_table.CUSTOMER_REF, x.customer_ref)
            mobile_digest = self.ctx.digest(lookup_table.MOBILE, x.e164)
            existing = seen.get((x.tenant, ref_digest))
            if existing is None:
                found = lookup_table.find(s, lookup_table.CUSTOMER_REF, ref_digest, x.tenant)
                existing = UUID(hex=found[0]) if found else None
            if existing is not None:
                # Idempotent only for the same customer: another number is a
                # change of mobile, never a silent no-op.
                same = lookup_table.find(s, lookup_table.MOBILE, mobile_digest, x.tenant)
                if existing.hex not in same and existing not in pending_mobile.get(
                    mobile_digest, ()
                ):
                    raise IdempotencyConflict(
                        "mobile",
                        "customer_ref is registered with another number; use change_mobile",
                    )
                ids.append(existing)
                continue
            account_id = uuid4()
            self.ctx.store.keys.create(account_id, now)
            accounts.append(
                Account(
                    id=account_id,
                    tenant=x.tenant,
                    customer_ref=Personal(account_id, x.customer_ref),
                    mobile=Personal(account_id, x.e164),
                    name=Personal(account_id, x.name),
                    carrier=x.carrier,
                    capability=x.capability,
                    time_zone=x.time_zone,
                    language=x.language,
                    at=now,
                )
            )
            seen[(x.tenant, ref_digest)] = account_id
            pending_mobile.setdefault(mobile_digest, set()).add(account_id)
            rows += [
                lookup_table.row(lookup_table.CUSTOMER_REF, x.tenant, ref_digest, account_id.hex),
                lookup_table.row(
                    lookup_table.MOBILE,
                    x.tenant,
                    self.ctx.digest(lookup_table.MOBILE, x.e164),
                    account_id.hex,
                ),
            ]
            ids.append(account_id)
        if accounts:
            self.uow.save(*accounts)
            lookup_table.insert_rows(s, rows)
        return ids

    def find(
        self,
        tenant: str | None = None,
        *,
        mobile: str | None = None,
        customer_ref: str | None = None,
    ) -> list[UUID]:
        if (mobile is None) == (customer_ref is None):
            raise InvalidInput("mobile|customer_ref", "give exactly one")
        if mobile is not None:
            kind = lookup_table.MOBILE
            digest = self.ctx.digest(kind, normalise_mobile(mobile))
        else:
            kind = lookup_table.CUSTOMER_REF
            digest = self.ctx.digest(kind, v.text(customer_ref, "customer_ref", 64))
        with self.uow.read() as s:
            return [UUID(hex=h) for h in lookup_table.find(s, kind, digest, tenant)]

    def view(self, account_id: UUID) -> AccountView:
        with self.uow.read():
            a = self.get(account_id)
        return AccountView(
            id=a.id,
            tenant=a.tenant,
            customer_ref=a.customer_ref.shown(),
            mobile=a.mobile.shown(),
            name=a.name.shown(),
            carrier=a.carrier,
            capability=a.capability,
            time_zone=a.time_zone,
            language=a.language,
            closed=a.closed,
            erased=a.erased,
        )

    def change_mobile(self, account_id: UUID, mobile: str, carrier: str = "unknown") -> None:
        e164 = normalise_mobile(mobile)
        c = parse_carrier(carrier)

        def run(s: Session) -> None:
            a = self.get(account_id)
            a.change_mobile(Personal(a.id, e164), c, self.ctx.now())
            self.uow.save(a)
            lookup_table.replace_mobile(
                s, a.id.hex, a.tenant, self.ctx.digest(lookup_table.MOBILE, e164)
            )

        self.uow.run(run)

    def close(self, account_id: UUID) -> None:
        def run(s: Session) -> None:
            a = self.get(account_id)
            a.close(self.ctx.now())
            self.uow.save(a)

        self.uow.run(run)

    def learn_capability(
        self, account_id: UUID, capability: Capability, source: str, at: datetime
    ) -> None:
        """Record what a gateway told us about the number's +Message support."""
        a = self.get(account_id)
        a.learn_capability(capability, source, at)
        self.uow.save(a)
