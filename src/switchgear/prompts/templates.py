"""Where ``pipeline/prompt.py`` still imports ``PromptTemplate`` from: the template model is the
config's ``prompts:`` section and lives in ``sections/prompts.py``. An import, not a copy; this
module goes once ``pipeline/prompt.py`` imports it from there."""

from switchgear.sections.prompts import PromptTemplate as PromptTemplate
