"""Run records into survey-style tables, statistics and plots (``python -m bench.results``).

Modules, each importing only those before it: ``schema`` (metric names, directions, display
scales, record and W&B key names) ← ``load`` (run records, W&B runs, the survey's values) ←
``table`` (one row per config: mean ± std over seeds, run counts) ← ``render`` (one layout, as
Markdown/LaTeX/HTML/CSV), ``stats`` (paired tests, intervals, ranks, object size, sensitivity),
``plots`` ← ``__main__`` (the command line). Everything a table needs comes from the records: the
package imports no ``datasets`` module.
"""
