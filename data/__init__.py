"""Where the repository and its data sets live, and the one reader of each shared data set.

The lowest layer: it imports nothing of the project, and every package may import it.
"""
