"""Folds events into Postgres read models."""
