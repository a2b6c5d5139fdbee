"""The AI infrastructure scorecard: eight categories scored 0, 1 or 2 from evidence.

``spec.py`` is the optional ``scorecard:`` config section (what no record can know),
``evidence.py`` gathers the facts, ``categories.py`` scores them (pure functions) and
``report.py`` renders the result as text, JSON or Markdown.
"""
