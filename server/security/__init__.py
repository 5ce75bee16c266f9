"""Who may call what: API keys and scopes, CORS, rate limits, request limits, the access log."""
