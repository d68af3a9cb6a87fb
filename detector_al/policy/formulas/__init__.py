"""The per-box formulas the image strategies in :mod:`detector_al.policy.strategies` aggregate: uncertainty, consistency, class weights."""
