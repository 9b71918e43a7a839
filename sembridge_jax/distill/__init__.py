"""Distillation: the teacher gallery, the baselines' losses and the SemBridge step."""
