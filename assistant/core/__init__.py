"""Foundations every other package stands on: settings, user-facing errors, logging, ports."""
