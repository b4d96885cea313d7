"""Stores on disk: the dataset store, the prediction store, image files, the model bundle."""
