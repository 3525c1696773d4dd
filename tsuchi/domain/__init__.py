"""The domain model: aggregates, events, value objects and pure rules.

No I/O, no SQL, no clock reads: time arrives as arguments.
"""
