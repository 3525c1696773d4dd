"""Benchmarks of tsuchi against the raw ``eventsourcing`` library.

Run ``python -m benchmarks [--quick] [--only NAME] [--out FILE]``.  Each
figure lives in its own module (:mod:`benchmarks.e2e`, :mod:`benchmarks.broadcast`,
:mod:`benchmarks.urgent_latency`, :mod:`benchmarks.projection`,
:mod:`benchmarks.audit_export`, :mod:`benchmarks.timers`, :mod:`benchmarks.pii`,
:mod:`benchmarks.growth`); :mod:`benchmarks.runner` drives them, prints a table
and writes ``bench-results.json``.  :mod:`benchmarks.profiling` profiles the
hot paths with pyinstrument and writes ``benchmarks/PROFILE.md``.

Ratios are always oriented so that higher is better:

* throughput: ``value / baseline`` (baseline = the raw ``eventsourcing``
  application storing the same events, run in the same process);
* latency and memory against an absolute limit: ``limit / value`` (headroom;
  ``>= 1`` meets the limit), with ``baseline`` null;
* growth (value per size): ``value / value at the smallest size`` for rates,
  ``value at the smallest size / value`` for memory (``1.0`` = flat).

Nothing here asserts timings; no personal data is printed (customer data is
synthetic and never shown).
"""
