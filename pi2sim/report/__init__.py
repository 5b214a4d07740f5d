"""Reports: summaries, tables, files, plots."""
