"""Plumbing every app shares: env readers, request facts, login throttle, API query, API and
admin bases. May import Django and DRF only: no app, nothing of qms's composition."""
