"""Fixtures for journal_fixtures (filled in by the module that owns them)."""
