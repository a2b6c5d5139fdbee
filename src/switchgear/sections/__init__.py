"""The config file's sections that a domain package reads, and the value types they are written
in, below ``config.py`` so that config imports no domain package.

``config.py`` assembles them into ``Config`` beside the sections it holds itself; the domain
packages import them from here (the priority tiers from ``tiers.py``, the SLO specs from
``slo.py``, ...). A module here imports only the foundation (``errors``, ``exchange``) and its siblings here.
"""
