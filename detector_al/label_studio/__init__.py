"""Everything that speaks Label Studio: the labeling config, auth, the SDK client, regions, tasks and the queue."""
