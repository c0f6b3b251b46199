"""Collect kd-sweep runs from MLflow and render paper-style tables."""
