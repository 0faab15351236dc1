"""The hand-written HTTP/1.1 client the registry client sends through."""
