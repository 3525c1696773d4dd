"""The simulated carrier network: a seedable stand-in for docomo, au, SoftBank
and Rakuten behind an aggregator, for the demo, tests and benchmarks.

Every outcome is a pure function of the seed and the message reference, so a
run can be replayed exactly.  Per number it decides +Message capability
(overridable); per submission it decides acceptance, delivery or failure,
read receipts and replies, each after a latency drawn from an exponential
distribution.  Carriers can be put into an outage window.  Reports become
visible through :meth:`poll_reports` once the (injected) time reaches them.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count
from threading import Lock

from tsuchi.domain.suggestions import Suggestion
from tsuchi.domain.values import Carrier, Channel
from tsuchi.ports import Clock, StatusReport, Submission, SubmitResult


@dataclass(frozen=True)
class NetworkProfile:
    plus_message_capable_rate: float = 0.8
    delivery_rate: float = 0.97
    sms_delivery_rate: float = 0.98
    read_rate: float = 0.75
    reply_rate: float = 0.5  # of reads, when reply suggestions were offered
    delivery_latency_s: float = 3.0  # mean
    read_latency_s: float = 600.0  # mean
    permanent_failure_share: float = 0.5


@dataclass
class SimulatedCarrierNetwork:
    seed: int = 0
    clock: Clock | None = None
    profile: NetworkProfile = field(default_factory=NetworkProfile)
    capability: dict[str, bool] = field(default_factory=dict)
    outages: dict[Carrier, tuple[datetime, datetime]] = field(default_factory=dict)
    submitted: list[Submission] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._queue: list[tuple[datetime, int, StatusReport]] = []
        self._seq = count()
        self._lock = Lock()

    def _rng(self, *parts: str) -> random.Random:
        digest = hashlib.sha256("\0".join((str(self.seed), *parts)).encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def is_capable(self, number: str) -> bool:
        if number in self.capability:
            return self.capability[number]
        return self._rng("cap", number).random() < self.profile.plus_message_capable_rate

    def _schedule(self, report: StatusReport) -> None:
        heapq.heappush(self._queue, (report.at, next(self._seq), report))

    def submit(self, submissions: Sequence[Submission]) -> list[SubmitResult]:
        results = []
        for sub in submissions:
            with self._lock:
                self.submitted.append(sub)
            now = self.clock.now() if self.clock is not None else datetime.now(UTC)
            outage = self.outages.get(sub.carrier)
            if outage and outage[0] <= now < outage[1]:
                results.append(SubmitResult(sub.reference, False, "503", reason="outage"))
                continue
            if sub.channel is Channel.PLUS_MESSAGE and (
                sub.carrier is Carrier.RAKUTEN or not self.is_capable(sub.to)
            ):
                results.append(SubmitResult(sub.reference, False, "403", reason="not_capable"))
                continue
            results.append(SubmitResult(sub.reference, True, "0", gateway_ref=sub.reference))
            self._plan(sub, now)
        return results

    def _plan(self, sub: Submission, now: datetime) -> None:
        p = self.profile
        rng = self._rng("outcome", sub.reference)
        t = now + timedelta(seconds=rng.expovariate(1 / 0.5))
        with self._lock:
            self._schedule(StatusReport(sub.reference, "accepted", t))
            rate = p.delivery_rate if sub.channel is Channel.PLUS_MESSAGE else p.sms_delivery_rate
            t += timedelta(seconds=rng.expovariate(1 / p.delivery_latency_s))
            if rng.random() >= rate:
                permanent = rng.random() < p.permanent_failure_share
                self._schedule(
                    StatusReport(
                        sub.reference,
                        "failed",
                        t,
                        code="UNDELIV" if permanent else "EXPIRED",
                        permanent=permanent,
                    )
                )
                return
            self._schedule(StatusReport(sub.reference, "delivered", t))
            if sub.channel is not Channel.PLUS_MESSAGE or rng.random() >= p.read_rate:
                return
            t += timedelta(seconds=rng.expovariate(1 / p.read_latency_s))
            self._schedule(StatusReport(sub.reference, "read", t))
            if sub.suggestions and rng.random() < p.reply_rate:
                choice = rng.choice(sub.suggestions)
                tapped = choice if isinstance(choice, Suggestion) else Suggestion.reply(choice)
                t += timedelta(seconds=rng.expovariate(1 / 30.0))
                self._schedule(
                    StatusReport(sub.reference, "reply", t, text=tapped.label, postback=tapped.code)
                )

    def known(self, references: Sequence[str]) -> set[str]:
        """References this network has accepted (for crash reconciliation)."""
        with self._lock:
            accepted = {s.reference for s in self.submitted}
        return {r for r in references if r in accepted}

    def poll_reports(self, until: datetime, limit: int = 1000) -> list[StatusReport]:
        out: list[StatusReport] = []
        with self._lock:
            while self._queue and self._queue[0][0] <= until and len(out) < limit:
                out.append(heapq.heappop(self._queue)[2])
        return out

    @property
    def pending_reports(self) -> int:
        return len(self._queue)
