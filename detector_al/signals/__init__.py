"""What the loop learns about itself: stopping, likely label errors, annotator time, the dashboard's data."""
