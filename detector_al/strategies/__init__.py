"""The per-box formulas the image strategies in :mod:`detector_al.uncertainty` aggregate: uncertainty, consistency, class weights."""
