"""The paper's reported numbers (``results/reported/*.csv``) and where regenerated tables land.

Load a reported table with :func:`results.reported.load_reported`; ``misato compare --reported NAME`` puts it beside
measured runs.
"""
