"""The configuration: its model, loading, reloading, and the registry clients it names."""
