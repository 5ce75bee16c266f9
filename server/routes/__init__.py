"""HTTP routes by audience: the hot path (decide, feedback), admin data, identity, experiment reports."""
