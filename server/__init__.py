"""The outside of Arbiter: the FastAPI app, its routes, settings, auth, metrics, and the CLI."""
