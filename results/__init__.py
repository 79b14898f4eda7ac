"""The paper's reported numbers (``results/reported/*.csv``) and the paper's tables rebuilt from evaluation runs.

Load a reported table with :func:`results.reported.load_reported`; :func:`results.tables.join_reported` matches
measured runs to it and checks they were scored on the paper's benchmark (``results/reported/benchmarks.csv``).
``misato compare --reported NAME`` puts it beside measured runs.

:func:`results.paper.build_tables` (``misato tables``) builds each paper table from run folders through the
mappings of ``results/mappings/*.toml`` (:mod:`results.mapping`) and writes CSV, Markdown and LaTeX
(:mod:`results.render`).
"""
