"""The long-running processes: the daemon and the webhook bridge, their HTTP, bus and metrics."""
