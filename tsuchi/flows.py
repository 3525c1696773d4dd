"""The old import path of the flows' public types, kept for hosts.

The flows themselves live in :mod:`tsuchi.application.flows` (one service per
flow) and :mod:`tsuchi.application.sweep`; hosts import
``from tsuchi.flows import DeadlineSpec`` and keep working.
"""

from tsuchi.application.flows.deadlines import DeadlineSpec
from tsuchi.application.sweep import SweepStats

__all__ = ["DeadlineSpec", "SweepStats"]
