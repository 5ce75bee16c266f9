"""Shared fixtures: real Redis (embedded, or ARBITER_REDIS_URL), apps built per test."""

pytest_plugins = ["support.redis", "pytester"]
