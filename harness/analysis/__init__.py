"""What a user reads: comparisons, the report and the recommendation.

How two windows are compared (``pairing``), ``harness compare`` (``compare``: pairing cells by their identities;
``compare_render``: tables, Markdown, details), the Markdown/plot report (``report``) and ``harness recommend``
(``recommend``: choosing; ``recommend_render``: the lines it prints and the report's section).

May import: ``harness.store`` and ``harness.measure``; never ``harness.sweep``.
"""
