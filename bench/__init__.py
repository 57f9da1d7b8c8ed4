"""Benchmark scripts (`python -m bench.<name>`) and their result files in bench/results/.

The top layer: it may import every package (and tests/tiny_models.py for the reliability bench);
nothing but tests imports it (tests/test_layout.py).
"""
