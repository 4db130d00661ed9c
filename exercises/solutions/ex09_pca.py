"""Exercise 9 (solution): PCA of an embedding cube (Sec. IV-B, Fig. 6), by the covariance matrix.

Check it: python exercises/check.py 9 --solution
"""
import numpy as np


def pca_fit(X, k=3):
    """Principal components of X (N, F), float64: -> (mean (F,), components (k, F), explained (k,)).

    Centre X by its column means; the components are the unit eigenvectors of the covariance matrix
    with the k largest eigenvalues, one per row, largest first; explained[i] = eigenvalue i / the sum
    of all F eigenvalues (the share of the total variance). Any 1 <= k <= F. A component's sign is
    arbitrary: the checker flips each to agree with embed.pca_fit's before comparing.
    """
    mean = X.mean(axis=0)                                           # (F,)
    centred = X - mean                                              # (N, F)
    cov = centred.T @ centred / (len(X) - 1)                        # (F, F)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)                 # ascending, vectors in columns
    order = np.argsort(eigenvalues)[::-1][:k]
    return mean, eigenvectors[:, order].T, eigenvalues[order] / eigenvalues.sum()
