"""The digits are read from scikit-learn's file without importing scikit-learn (a second a process),
and are exactly what scikit-learn's own loader returns."""
import subprocess
import sys

import numpy as np
from sklearn.datasets import load_digits

from trainables.datasets.digits import digits_arrays


def test_the_digits_are_scikit_learns_own():
    images, labels = digits_arrays()
    ours = load_digits()
    assert np.array_equal(images, ours.images) and images.dtype == ours.images.dtype
    assert np.array_equal(labels, ours.target)


def test_loading_the_digits_imports_no_scikit_learn():
    code = ("import sys; from trainables.datasets import load_dataset; d = load_dataset('digits', '.');"
            " print(d.num_classes, len(d.train_y) + len(d.test_y), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["10", "1797", "False"]
