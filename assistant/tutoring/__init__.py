"""Tutoring: exercise generation with disjoint train and held-out splits."""
