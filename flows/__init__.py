"""Prefect flows for calcmine. Importing this package prepares a local, private Prefect setup."""

from flows.settings import configure_prefect

configure_prefect()
