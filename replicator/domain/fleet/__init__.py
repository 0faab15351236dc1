"""The daemon and its fleet: who holds a job or a duty, and whether a process is healthy."""
