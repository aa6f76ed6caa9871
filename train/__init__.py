"""Training: state, losses, step functions, the one loop, checkpoints, evaluation."""
