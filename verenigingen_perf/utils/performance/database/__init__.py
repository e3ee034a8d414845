"""Database health: what the database itself reports about its statements, tables, indexes, cache and
connections, kept as snapshots (doctype Performance Database Snapshot), compared and turned into
recommendations that each carry the figures behind them.

- `collect_mariadb`, `collect_sqlite`: one collector per backend, chosen by `collectors.collector()`.
- `shapes`: statement text with its literals removed (pure).
- `recommend`, `compare`: recommendations and snapshot comparisons (pure).
- `snapshot`: taking, storing, reading and expiring snapshots (the daily job).
"""
