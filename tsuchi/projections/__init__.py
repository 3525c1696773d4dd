"""Read models built from the event log (delivery views, consent register, audit trail)."""
