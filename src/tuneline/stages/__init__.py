"""Stages: each a short module that reads top to bottom, from config + run directory to artifacts."""
