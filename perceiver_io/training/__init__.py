"""Model-independent training parts: LAMB and schedules, losses and augmentation, checkpoints, data order."""
