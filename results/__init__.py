"""The paper's reported numbers (``results/reported/*.csv``) and where regenerated tables land.

Load a reported table with :func:`results.reported.load_reported`; :func:`results.tables.join_reported` matches
measured runs to it and checks they were scored on the paper's benchmark (``results/reported/benchmarks.csv``).
``misato compare --reported NAME`` puts it beside measured runs.
"""
