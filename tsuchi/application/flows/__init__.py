"""Multi-step flows that run on durable timers and inbound events.

``fallbacks`` (delivery TTL, read window, SMS fallback), ``deadlines``
(reminders before a due date), ``fraud`` ("was this you?" alerts),
``broadcasts`` (safety checks and campaigns in chunks) and ``replies``
(routing a reply to its flow, opt-out keywords).  None holds state of its
own: any number of workers can run them against one database.
"""
