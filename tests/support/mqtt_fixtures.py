"""Fixtures for mqtt_fixtures (filled in by the module that owns them)."""
