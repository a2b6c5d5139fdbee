"""The AI infrastructure scorecard: eight categories scored 0, 1 or 2 from evidence.

The optional ``scorecard:`` config section (what no record can know) is
``sections/scorecard.py``; ``evidence.py`` gathers the facts, ``categories.py`` scores them
(pure functions) and ``report.py`` renders the result as text, JSON or Markdown.
"""
