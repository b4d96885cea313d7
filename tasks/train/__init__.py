"""Training stage: sampling plan, patches, augmentation, the loop, validation, registration."""
