"""Whole-registry passes: backfill, verify and reconcile's scan."""
