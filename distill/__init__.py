"""Training the drafters: a few-layer draft distilled from the target (`python -m distill.draft`)
and an EAGLE feature head (`python -m distill.eagle`).

Sits above engine/ (it loads models and runs the target through `engine.runner`); nothing in
engine/, env/, agents/ or serving/ imports it.
"""
