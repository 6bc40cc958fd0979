"""Projections: the API a service writes read models and snapshots with, and their fold."""
