"""What persists per ``MODEL_DIR``: the one SQLite store (images, decisions, rounds, events, jobs) and the model registry."""
