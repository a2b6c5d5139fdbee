"""Self-contained HTML reports with inline-SVG charts (no plotting dependency)."""
