"""The long jobs: bulk ``ingest`` of a folder, scoring a pool, training, and the retraining worker behind the webhooks."""
