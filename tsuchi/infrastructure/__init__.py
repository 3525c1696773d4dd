"""Adapters: event store wiring, personal-data cipher and key store, gateways, clocks."""
