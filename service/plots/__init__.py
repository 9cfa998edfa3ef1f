"""Plots of jobs, models and batch predictions, rendered on request and cached as artifacts."""
