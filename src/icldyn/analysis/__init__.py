"""Analysis of stored runs: the one reader (`runs`), fits with confidence intervals (`fits`), phase and
plateau detection (`phases`), and each paper's post-hoc curve analysis (`<experiment>.py`).

Claims and figures read runs through this layer; it reads only the store (and may use theory,
estimators, models and tasks for post-hoc evaluations of stored checkpoints).
"""
