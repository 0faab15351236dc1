"""Moving an image's bytes: the copy plan, refused mounts, resumed transfers and their pace."""
