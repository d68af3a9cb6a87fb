"""The file stream: files in, one decision per file out, on this process or on Ray."""
