"""``gateway eval``: scripted callers against a running gateway, and a readable report."""
