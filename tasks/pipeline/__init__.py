"""The pipeline's record of what each stage already did."""
