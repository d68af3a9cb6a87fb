"""The policy: its one settings object, the strategy registry and formulas, CEAL, the decision per image."""
