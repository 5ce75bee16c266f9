"""Shared fixtures: real Redis (embedded, or ARBITER_REDIS_URL), apps built per test."""

pytest_plugins = ["tests.redis_fixtures"]
