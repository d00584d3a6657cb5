"""Figures of the feature-convergence experiment (placeholder, filled in below)."""
def feature_error_figure(run, views): return None
def attention_figure(run, views): return None
def scaling_figure(run, views): return None
