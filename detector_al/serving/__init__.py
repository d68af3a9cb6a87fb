"""What the ML backend runs: the prediction service (model loaded once), the training worker, the queue refresh."""
