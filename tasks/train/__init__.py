"""Training stage: the balance step (sampling plan), patches, augmentation, the loop,
validation, the ensemble members, the training run and the model registration."""
