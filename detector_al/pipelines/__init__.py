"""The long jobs: bulk ingest of a folder, scoring a pool into a queue file, retraining, its review."""
