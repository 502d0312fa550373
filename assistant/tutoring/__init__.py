"""Tutoring: exercises with disjoint train and held-out splits, and the exact answer checker."""
