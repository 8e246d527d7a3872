"""Training: the loop, its callbacks, optimizers and learning-rate schedules."""
