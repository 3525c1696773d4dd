"""Decisions as pure functions: consent and purpose rules, routing."""
