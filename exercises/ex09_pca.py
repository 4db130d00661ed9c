"""Exercise 9: PCA of an embedding cube (Sec. IV-B, Fig. 6). See exercises/README.md.

Write pca_fit, then check it against embed.pca_fit (components compared up to their sign):
    python exercises/check.py 9
    python exercises/check.py 9 --cube runs/ex9/synth_0_s2_latents.nc     # and on a real cube
(a solution is in exercises/solutions/ex09_pca.py: try first)
"""
import numpy as np


def pca_fit(X, k=3):
    """Principal components of X (N, F): -> (mean (F,), components (k, F), explained (k,)).

    Centre X by its column means; the components are the unit eigenvectors of the covariance matrix
    with the k largest eigenvalues, one per ROW, largest first; explained[i] = eigenvalue i / sum of
    ALL F eigenvalues (the share of the total variance). A component's sign is arbitrary.
    """
    raise NotImplementedError("pca_fit (Sec. IV-B)")
