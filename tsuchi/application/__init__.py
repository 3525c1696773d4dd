"""The service layer: one small service per job, over an explicit unit of work.

:mod:`tsuchi.engine` builds these bottom-up and delegates to them; nothing here
imports the facade.  Layers, from the top: ``sweep`` > ``dispatch`` |
``inbound`` | ``privacy`` > ``flows`` > the entity services (senders,
templates, accounts, consents, notices, summaries) > ``unit_of_work`` >
``context``, ``validation``, ``views``.  See docs/architecture.md.
"""
