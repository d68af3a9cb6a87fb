"""The queue: batch selection, building the order, planning it over a stored pool, ranking a scored pool."""
