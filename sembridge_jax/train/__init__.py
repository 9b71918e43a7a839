"""Training machinery shared by every stage: sharding, metrics, checkpoints, trainers."""
