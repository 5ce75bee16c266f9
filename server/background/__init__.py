"""Work a server process runs beside its requests: the event intake, bandit learners, triggers."""
