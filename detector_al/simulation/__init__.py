"""The active-learning experiment with an oracle: paired learning curves, labels saved, effort, the training-free screen."""
