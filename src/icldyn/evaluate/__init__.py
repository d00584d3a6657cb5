"""`icldyn evaluate`: a stored run's models and estimators on shifted prompts (issue 20)."""
