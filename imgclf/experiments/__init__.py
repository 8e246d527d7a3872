"""Many runs as one experiment: k-fold cross-validation and the hyper-parameter search."""
