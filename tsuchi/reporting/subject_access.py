"""The readable form of a subject access report (APPI disclosure request).

The engine assembles the report as a JSON-ready dict; this turns it into the
plain text a customer or a compliance officer can read.
"""

from __future__ import annotations

from typing import Any


def render_text(report: dict[str, Any]) -> str:
    a = report["account"]
    lines = [
        "保有個人データ開示報告書 / Subject access report",
        f"generated at: {report['generated_at']}",
        "",
        "== Profile ==",
        f"  account id:     {a['id']}",
        f"  organisation:   {a['tenant']}",
        f"  customer ref:   {a['customer_ref']}",
        f"  name:           {a['name']}",
        f"  mobile:         {a['mobile']}",
        f"  carrier:        {a['carrier']} (+Message: {a['plus_message_capability']})",
        f"  time zone:      {a['time_zone']}   language: {a['language']}",
        f"  registered at:  {a['registered_at']}",
        f"  closed: {a['closed']}   erased: {a['erased']}",
        "",
        f"== Consents ({len(report['consents'])}) ==",
    ]
    for c in report["consents"]:
        state = "granted" if c["granted"] else "not granted"
        lines.append(f"  {c['sender']} / {c['purpose']}: {state}")
        for h in c["history"]:
            by = f" by {h['by']}" if h["by"] else ""
            wording = f" wording: {h['wording']}" if h["wording"] else ""
            lines.append(
                f"    v{h['version']} {h['at']} {h['action']} via {h['source']}{by}{wording}"
            )
    lines += ["", f"== Messages ({len(report['messages'])}) =="]
    for m in report["messages"]:
        lines.append(
            f"  {m['requested_at']} {m['sender']} {m['template']} [{m['purpose']}, "
            f"{m['urgency']}] status: {m['status']}"
        )
        lines.append(f"    +Message: {m['content']['plus_message']}")
        lines.append(f"    SMS:      {m['content']['sms']}")
        for t in m["timeline"]:
            attempt = f" (attempt {t['attempt']})" if t["attempt"] else ""
            detail = f": {t['detail']}" if t["detail"] else ""
            lines.append(f"    - {t['at']} {t['status']}{attempt}{detail}")
        for r in m["replies"]:
            lines.append(f"    reply {r['at']}: {r['text']}")
    inbound = report.get("inbound", [])
    lines += ["", f"== Messages you sent us ({len(inbound)}) =="]
    for i in inbound:
        lines.append(f"  {i['at']} [{i['channel']}]: {i['text']}")
        for f in i["media"]:
            lines.append(f"    file: {f['url']} ({f['mime_type']})")
    answers = report.get("operator_replies", [])
    lines += ["", f"== Answers from our staff ({len(answers)}) =="]
    for r in answers:
        lines.append(f"  {r['at']} [{r['channel']}] {r['operator']}: {r['text']}")
    return "\n".join(lines) + "\n"
