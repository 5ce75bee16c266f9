"""Customer state in Redis: profiles, event windows, contact caps, the client and the embedded server."""
