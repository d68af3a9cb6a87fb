"""Files in: file helpers, robust image decoding, YOLO label files, and fetching a task's image (``io/fetch/``)."""
