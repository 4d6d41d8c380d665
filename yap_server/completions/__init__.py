"""`WS /ws/completions`: thinking-effort + structured-output jobs (job board, Fernet, route)."""
