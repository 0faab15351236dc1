"""Fixtures for registry_fixtures (filled in by the module that owns them)."""
