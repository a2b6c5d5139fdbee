"""Quality signals per route, deployment and served alias, and the detector of their shifts."""
