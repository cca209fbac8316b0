"""segloss-bench runner: configs in, trained model, metrics and a run record out."""
