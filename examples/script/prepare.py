"""A data-preparation step run before train.py in the same job (a second Python process)."""

import random

import numpy as np

with open("prepared.txt", "w") as f:
    f.write(f"{random.random()} {np.random.rand()}\n")
print("prepared")
