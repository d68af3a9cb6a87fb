"""Where task images come from: a Label Studio task's image reference (upload, local file, cloud or plain URL) to a local file."""
