"""HTML views: the run report and the comparison of experiments, and their shared plots."""
