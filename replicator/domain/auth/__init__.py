"""Registry credentials: where they may go (realms) and the token failures remembered per scope."""
