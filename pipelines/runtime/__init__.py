"""Ray start-up and placement checks, progress from the workers to the driver, MLflow tracking."""
