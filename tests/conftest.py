"""Shared fixtures: each concern's fixtures live in its own module under tests/support/."""

pytest_plugins = [
    "tests.support.registry_fixtures",
    "tests.support.mqtt_fixtures",
    "tests.support.stack_fixtures",
    "tests.support.journal_fixtures",
    "tests.support.pulp_server",
    "tests.support.log_isolation",
    "tests.support.parallel_runs",
]
