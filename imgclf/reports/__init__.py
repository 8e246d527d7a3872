"""What a person reads about runs: explanations, report.html, comparisons, the runs table."""
