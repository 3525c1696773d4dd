"""The offline verifier of ``tsuchi-audit/v1`` exports.

Why this module exists: an auditor checks an export with nothing but its
three files and a trust root: the engine's published public key, or the
anchor log kept outside the database (``tsuchi audit verify``), and a failure
must name the first bad seq.  This reads the files line by line (memory
stays constant whatever the export's size) and checks every rule of
:mod:`tsuchi.projections.audit.format` and, with an anchor log, the
continuity rules of :mod:`tsuchi.projections.audit.anchor`; it depends on
nothing else of tsuchi, so it is also a reference for writing an independent
verifier.

Trust: with ``public_key`` every signature must verify with it.  With
``anchor`` the export's own key must have signed the anchored checkpoints in
its range.  With neither the export proves nothing about who signed it (a
forger can re-sign everything with a key of their own), so verification fails
unless ``trust_embedded_key`` says that is what the caller wants.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from tsuchi.ports import AnchoredCheckpoint
from tsuchi.projections.audit.anchor import AnchorIndex, read_anchor_index
from tsuchi.projections.audit.format import (
    CHECKPOINT_FIELDS,
    CHECKPOINTS_FILE,
    FORMAT,
    MALFORMED_KEY,
    MANIFEST_FIELDS,
    MANIFEST_FILE,
    RANGES,
    RECORD_FIELDS,
    RECORDS_FILE,
    STUB_FIELDS,
    ZERO_HASH,
    canonical_json,
    checkpoint_message,
    entry_hash,
    key_id,
    manifest_message,
    selection_message,
    utc_iso,
)

# -- keys ------------------------------------------------------------------------------------


def parse_public_key(data: bytes) -> bytes:
    """A raw 32-byte Ed25519 public key from a key file's contents: the raw
    bytes, their base64 text, or a PEM ``PUBLIC KEY``."""
    text = data.strip()
    if len(data) == 32 and not text.startswith(b"-----"):
        return data
    if text.startswith(b"-----BEGIN"):
        key = load_pem_public_key(text)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM key is not an Ed25519 public key")
        return key.public_bytes_raw()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the public key is neither raw, base64 nor PEM") from None
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key has 32 bytes")
    return raw


# -- verification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify_export`.  On failure ``first_bad_seq`` names
    the first sequence number found wrong (None when the fault is not tied to
    one record, e.g. a broken manifest) and ``reason`` says what."""

    ok: bool
    reason: str
    first_bad_seq: int | None = None
    origin: str = ""
    first_seq: int = 0
    last_seq: int = 0
    records: int = 0
    redacted: int = 0
    checkpoints: int = 0
    key_id: str = ""
    key_supplied: bool = False
    tenant: str | None = None
    anchored: int = 0
    """Anchored checkpoints the export was checked against (0 without an anchor log)."""
    range: str = ""
    malformed: tuple[int, ...] = ()
    """Seqs (the first 1,000) whose stored event could not be read; chained by digest."""
    malformed_count: int = 0

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        if not self.ok:
            where = f" at seq {self.first_bad_seq}" if self.first_bad_seq is not None else ""
            return f"FAILED{where}: {self.reason}"
        if self.key_supplied:
            trust = "the given public key"
        elif self.anchored:
            trust = "the key of the anchored checkpoints"
        else:
            trust = "the export's own key (unpinned)"
        scope = f", tenant {self.tenant} ({self.redacted} redacted)" if self.tenant else ""
        text = (
            f"OK: seq {self.first_seq}..{self.last_seq} ({self.range}), {self.records} "
            f"records{scope}, {self.checkpoints} checkpoints, signed by key {self.key_id} "
            f"verified with {trust}"
        )
        if self.anchored:
            text += f"; extends {self.anchored} anchored checkpoints"
        if self.malformed_count:
            listed = ", ".join(str(s) for s in self.malformed[:20])
            more = " ..." if self.malformed_count > 20 else ""
            text += (
                f"; {self.malformed_count} malformed stored events chained by digest "
                f"(seq {listed}{more})"
            )
        return text


class _Bad(Exception):
    def __init__(self, seq: int | None, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


def _reject_float(text: str) -> Any:
    raise ValueError("floats are not allowed")


def _loads(line: bytes) -> Any:
    return json.loads(line, parse_float=_reject_float)


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_hex64(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _parse_time(v: Any) -> datetime | None:
    if not isinstance(v, str) or not v.endswith("Z"):
        return None
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        return None
    return t if utc_iso(t) == v else None


def _lines(f: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    yield from enumerate(f, start=1)


class _Verifier:
    def __init__(
        self, directory: Path, public_key: bytes | None, anchor: str | Path | None = None
    ) -> None:
        self.dir = directory
        self.supplied = public_key
        self.anchor_location = anchor
        self.anchored: AnchorIndex | None = None
        self.anchored_matched = 0
        self.anchored_by_key = False
        self.malformed: list[int] = []
        self.malformed_count = 0
        self.records = 0
        self.redacted = 0
        self.checkpoints = 0
        self.prev_cp_seq = 0
        self.prev_cp_time: datetime | None = None
        self.prev_notification_id = 0

    # manifest ---------------------------------------------------------------------
    def load_manifest(self) -> None:
        try:
            m = _loads((self.dir / MANIFEST_FILE).read_bytes())
        except OSError:
            raise _Bad(None, f"{MANIFEST_FILE} is missing or unreadable") from None
        except ValueError:
            raise _Bad(None, f"{MANIFEST_FILE} is not valid JSON") from None
        if not isinstance(m, dict) or not MANIFEST_FIELDS <= set(m):
            raise _Bad(None, f"{MANIFEST_FILE} lacks required fields")
        if m["format"] != FORMAT:
            raise _Bad(None, f"unknown format {m['format']!r}; this verifier reads {FORMAT}")
        for k in ("first_seq", "last_seq", "record_count"):
            if not _is_int(m[k]):
                raise _Bad(None, f"manifest {k} is not an integer")
        if not isinstance(m["origin"], str) or not m["origin"]:
            raise _Bad(None, "manifest origin is missing")
        if m["first_seq"] < 1 or m["last_seq"] < m["first_seq"]:
            raise _Bad(None, "manifest seq range is empty or invalid")
        if m["record_count"] != m["last_seq"] - m["first_seq"] + 1:
            raise _Bad(None, "manifest record_count does not match its seq range")
        if not _is_hex64(m["anchor_prev_hash"]) or not _is_hex64(m["records_sha256"]):
            raise _Bad(None, "manifest hashes are malformed")
        if m["first_seq"] == 1 and m["anchor_prev_hash"] != ZERO_HASH:
            raise _Bad(1, "an export from seq 1 must be anchored at 64 zeros")
        try:
            manifest_key = base64.b64decode(m["public_key"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise _Bad(None, "manifest public_key is not base64") from None
        if len(manifest_key) != 32:
            raise _Bad(None, "manifest public_key is not a raw 32-byte Ed25519 key")
        if m["key_id"] != key_id(manifest_key):
            raise _Bad(None, "manifest key_id does not match its public_key")
        if _parse_time(m["exported_at"]) is None:
            raise _Bad(None, "manifest exported_at is not a UTC ISO-8601 time")
        if m["range"] not in RANGES:
            raise _Bad(None, f"manifest range is not one of {', '.join(RANGES)}")
        if not _is_int(m["malformed_count"]) or not (
            isinstance(m["malformed_seqs"], list) and all(_is_int(x) for x in m["malformed_seqs"])
        ):
            raise _Bad(None, "manifest malformed_count or malformed_seqs is malformed")
        if not isinstance(m["manifest_signature"], str):
            raise _Bad(None, "manifest_signature is not a string")
        self.m = m
        self.origin: str = m["origin"]
        self.first_seq: int = m["first_seq"]
        self.last_seq: int = m["last_seq"]
        self.key_id: str = m["key_id"]
        self.tenant: str | None = None
        if "tenant" in m:
            if not isinstance(m["tenant"], str) or not isinstance(
                m.get("selection_signature"), str
            ):
                raise _Bad(None, "tenant export without a selection_signature")
            self.tenant = m["tenant"]
        key = self.supplied if self.supplied is not None else manifest_key
        try:
            self.key = Ed25519PublicKey.from_public_bytes(key)
        except ValueError:
            raise _Bad(None, "the public key is not a valid Ed25519 key") from None
        self.key_mismatch = self.supplied is not None and self.supplied != manifest_key

    def _signature_ok(self, signature: Any, message: bytes) -> bool:
        if not isinstance(signature, str):
            return False
        try:
            self.key.verify(base64.b64decode(signature, validate=True), message)
        except (binascii.Error, ValueError, InvalidSignature):
            return False
        return True

    # checkpoints ---------------------------------------------------------------------
    def next_checkpoint(self, it: Iterator[tuple[int, bytes]]) -> dict[str, Any] | None:
        for n, line in it:
            if not line.endswith(b"\n"):
                raise _Bad(None, f"{CHECKPOINTS_FILE} line {n} is truncated")
            try:
                cp = _loads(line)
            except ValueError:
                raise _Bad(None, f"{CHECKPOINTS_FILE} line {n} is not valid JSON") from None
            if not isinstance(cp, dict) or set(cp) != CHECKPOINT_FIELDS or not _is_int(cp["seq"]):
                raise _Bad(None, f"{CHECKPOINTS_FILE} line {n} is not a checkpoint")
            if canonical_json(cp) + b"\n" != line:
                raise _Bad(cp["seq"], "checkpoint is not canonical JSON")
            return cp
        return None

    def check_checkpoint(self, cp: dict[str, Any], head: str) -> None:
        seq = cp["seq"]
        issued = _parse_time(cp["issued_at"])
        if issued is None:
            raise _Bad(seq, "checkpoint issued_at is not a UTC ISO-8601 time")
        if seq <= self.prev_cp_seq:
            raise _Bad(seq, "checkpoint sequence does not grow")
        if self.prev_cp_time is not None and issued < self.prev_cp_time:
            raise _Bad(seq, "checkpoint issued_at goes back in time")
        if cp["key_id"] != self.key_id:
            raise _Bad(seq, "checkpoint is signed by another key than the manifest names")
        if cp["head"] != head:
            raise _Bad(seq, "checkpoint head is not the entry_hash at its seq")
        message = checkpoint_message(self.origin, seq, cp["head"], cp["issued_at"])
        if not self._signature_ok(cp["signature"], message):
            if self.key_mismatch:
                raise _Bad(
                    seq,
                    "checkpoint signature does not verify with the given public key "
                    f"(the export names key {self.key_id})",
                )
            raise _Bad(seq, "checkpoint signature is invalid")
        self.prev_cp_seq = seq
        self.prev_cp_time = issued
        self.checkpoints += 1

    # records -----------------------------------------------------------------------
    def check_record(self, seq: int, line: bytes, prev: str) -> str:
        if not line.endswith(b"\n"):
            raise _Bad(seq, "record line is truncated")
        try:
            r = _loads(line)
        except ValueError:
            raise _Bad(seq, "record is not valid JSON") from None
        if not isinstance(r, dict):
            raise _Bad(seq, "record is not a JSON object")
        if r.get("seq") != seq or not _is_int(r.get("seq")):
            got = r.get("seq")
            raise _Bad(seq, f"expected seq {seq} here, found {got!r} (missing or reordered)")
        if canonical_json(r) + b"\n" != line:
            raise _Bad(seq, "record is not canonical JSON")
        if r.get("prev_hash") != prev:
            raise _Bad(seq, "prev_hash does not link to the previous record's entry_hash")
        if not _is_hex64(r.get("entry_hash")):
            raise _Bad(seq, "entry_hash is malformed")
        if r.get("redacted") is True:
            if set(r) != STUB_FIELDS:
                raise _Bad(seq, "redacted record has unexpected fields")
            if self.tenant is None:
                raise _Bad(seq, "redacted record in an export that is not tenant-filtered")
            self.redacted += 1
            return str(r["entry_hash"])
        if set(r) != RECORD_FIELDS:
            raise _Bad(seq, "record fields are not those of the format")
        if not all(_is_int(r[k]) for k in ("notification_id", "aggregate_version")):
            raise _Bad(seq, "record integers are malformed")
        if not all(
            isinstance(r[k], str)
            for k in ("tenant", "aggregate_type", "aggregate_id", "event_type", "actor")
        ) or not isinstance(r["correlation_id"], str):
            raise _Bad(seq, "record strings are malformed")
        if not isinstance(r["summary"], dict) or not _is_hex64(r["event_digest"]):
            raise _Bad(seq, "record summary or event_digest is malformed")
        if _parse_time(r["recorded_at"]) is None:
            raise _Bad(seq, "recorded_at is not a UTC ISO-8601 time")
        if r["notification_id"] <= self.prev_notification_id:
            raise _Bad(seq, "notification_id does not grow")
        self.prev_notification_id = r["notification_id"]
        if self.tenant is not None and r["tenant"] != self.tenant:
            raise _Bad(seq, "full record of another tenant in a tenant export")
        if entry_hash(r) != r["entry_hash"]:
            raise _Bad(seq, "entry_hash does not match the record's contents")
        if MALFORMED_KEY in r["summary"]:
            self.malformed_count += 1
            if len(self.malformed) < 1000:
                self.malformed.append(seq)
        return str(r["entry_hash"])

    # anchor log ----------------------------------------------------------------------
    def load_anchor(self) -> None:
        if self.anchor_location is None:
            return
        index = read_anchor_index(
            self.anchor_location, self.origin, self.first_seq - 1, self.last_seq
        )
        if self.origin not in index.origins:
            raise _Bad(
                None,
                f"the anchor log holds no checkpoint of this chain ({self.origin}): the export "
                "does not belong to the anchored history",
            )
        self.anchored = index

    def check_anchored(self, seq: int, head: str) -> None:
        """The export's head at ``seq`` against an anchored checkpoint there."""
        if self.anchored is None:
            return
        cp = self.anchored.in_window.get(seq)
        if cp is None:
            return
        if cp.head != head:
            raise _Bad(
                seq,
                "the export's head differs from the checkpoint anchored at this seq: "
                "history was rewritten",
            )
        if cp.key_id == self.key_id:
            message = checkpoint_message(self.origin, cp.seq, cp.head, cp.issued_at)
            if not self._signature_ok(cp.signature, message):
                raise _Bad(seq, "the anchored checkpoint's signature does not verify with the key")
            self.anchored_by_key = True
        self.anchored_matched += 1

    def check_anchor_coverage(self) -> None:
        if self.anchored is None:
            return
        if self.anchored_matched == 0:
            raise _Bad(
                None,
                f"no anchored checkpoint falls within the export's range "
                f"(seq {self.first_seq}..{self.last_seq}); nothing to check it against",
            )
        if self.supplied is None and not self.anchored_by_key:
            raise _Bad(
                None,
                f"the anchored checkpoints in range are not signed by the export's key "
                f"{self.key_id}: the export was signed by another key",
            )
        if self.m["range"] == "head":
            cut: AnchoredCheckpoint | None = next(
                (c for c in self.anchored.after if c.issued_at < self.m["exported_at"]), None
            )
            if cut is not None:
                raise _Bad(
                    cut.seq,
                    f"the export ends at seq {self.last_seq} but this checkpoint was anchored "
                    "before the export was made: the export was cut off",
                )

    def run(self) -> None:
        self.load_manifest()
        self.load_anchor()
        digest = hashlib.sha256()
        try:
            rf = (self.dir / RECORDS_FILE).open("rb")
            cf = (self.dir / CHECKPOINTS_FILE).open("rb")
        except OSError:
            raise _Bad(None, "records.jsonl or checkpoints.jsonl is missing") from None
        with rf, cf:
            cps = _lines(cf)
            cp = self.next_checkpoint(cps)
            prev: str = self.m["anchor_prev_hash"]
            if self.first_seq > 1:
                anchor = self.first_seq - 1
                if cp is None or cp["seq"] != anchor:
                    raise _Bad(anchor, "no checkpoint at the anchor (the seq before first_seq)")
                self.check_checkpoint(cp, prev)
                cp = self.next_checkpoint(cps)
            self.check_anchored(self.first_seq - 1, prev)
            seq = self.first_seq
            for line in rf:
                digest.update(line)
                if seq > self.last_seq:
                    raise _Bad(seq, "records beyond the manifest's last_seq")
                if cp is not None and cp["seq"] < seq:
                    raise _Bad(cp["seq"], "checkpoint out of order or outside the records")
                prev = self.check_record(seq, line, prev)
                self.check_anchored(seq, prev)
                self.records += 1
                while cp is not None and cp["seq"] == seq:
                    self.check_checkpoint(cp, prev)
                    cp = self.next_checkpoint(cps)
                seq += 1
            if seq <= self.last_seq:
                raise _Bad(seq, f"records end before the manifest's last_seq {self.last_seq}")
            if cp is not None:
                raise _Bad(cp["seq"], "checkpoint beyond the last record")
        if self.prev_cp_seq != self.last_seq:
            raise _Bad(self.last_seq, "no signed checkpoint at last_seq")
        if digest.hexdigest() != self.m["records_sha256"]:
            raise _Bad(None, "records.jsonl bytes do not match the manifest's records_sha256")
        if self.tenant is not None:
            message = selection_message(
                self.origin, self.tenant, self.first_seq, self.last_seq, self.m["records_sha256"]
            )
            if not self._signature_ok(self.m["selection_signature"], message):
                raise _Bad(None, "tenant selection signature is invalid")
            if self.m.get("redacted_count") != self.redacted:
                raise _Bad(None, "manifest redacted_count does not match the records")
        if not self._signature_ok(self.m["manifest_signature"], manifest_message(self.m)):
            raise _Bad(
                None,
                "manifest signature is invalid: the manifest was changed (a cut-back range, "
                "other hashes) or signed by another key",
            )
        if self.m["malformed_count"] != self.malformed_count:
            raise _Bad(None, "manifest malformed_count does not match the records")
        self.check_anchor_coverage()


def verify_export(
    directory: str | Path,
    public_key: bytes | None = None,
    *,
    anchor: str | Path | None = None,
    trust_embedded_key: bool = False,
) -> VerifyResult:
    """Verify an export directory offline, reading records line by line.

    ``public_key`` is the raw 32-byte Ed25519 key the verifier trusts (see
    :func:`parse_public_key`).  ``anchor`` is the anchor log (a file, or a
    directory holding ``audit-anchor.jsonl``): the export must extend the
    checkpoints anchored there (see :mod:`tsuchi.projections.audit.anchor`);
    a corrupt log raises :class:`~tsuchi.errors.AuditAnchorCorrupt`.  With
    neither, the export's own key proves integrity but not who signed, and
    the result is a failure unless ``trust_embedded_key`` is true.
    """
    if public_key is None and anchor is None and not trust_embedded_key:
        return VerifyResult(
            ok=False,
            reason=(
                "no trust root: give the published public key or the anchor log "
                "(or trust the export's own key explicitly)"
            ),
        )
    v = _Verifier(Path(directory), public_key, anchor)
    try:
        v.run()
    except _Bad as bad:
        return VerifyResult(
            ok=False,
            reason=bad.reason,
            first_bad_seq=bad.seq,
            origin=getattr(v, "origin", ""),
            records=v.records,
            key_supplied=public_key is not None,
        )
    return VerifyResult(
        ok=True,
        reason="",
        origin=v.origin,
        first_seq=v.first_seq,
        last_seq=v.last_seq,
        records=v.records,
        redacted=v.redacted,
        checkpoints=v.checkpoints,
        key_id=v.key_id,
        key_supplied=public_key is not None,
        tenant=v.tenant,
        anchored=v.anchored_matched,
        range=str(v.m["range"]),
        malformed=tuple(v.malformed),
        malformed_count=v.malformed_count,
    )
