"""Looking at the work: progress bars (and later records, logs, plots)."""
