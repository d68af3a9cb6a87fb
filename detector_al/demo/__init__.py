"""The demo: the seeded sample dataset, the bootstrap model trained on it, and ``make demo`` end to end."""
