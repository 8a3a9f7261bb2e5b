"""Training on Ray Train: the schedule, the steps of an epoch, Ray Data input, the run; per-pixel baselines."""
