"""Exercise 9: PCA of an embedding cube (Sec. IV-B, Fig. 6). See exercises/README.md.

Write pca_fit, checked against embed.pca_fit (components compared up to their sign). Work in your own copy:
    python exercises/check.py --start 9    # once: copies this stub to exercises/mywork/ex09_pca.py
    python exercises/check.py 9            # checks exercises/mywork/ex09_pca.py
    python exercises/check.py 9 --cube runs/ex9/synth_0_s2_latents.nc   # and on a real cube
A solution is in exercises/solutions/ex09_pca.py: try first. Hints come after a failed check.
"""
import numpy as np


def pca_fit(X, k=3):
    """Principal components of X (N, F), float64: -> (mean (F,), components (k, F), explained (k,)).

    Centre X by its column means; the components are the unit eigenvectors of the covariance matrix
    with the k largest eigenvalues, one per row, largest first; explained[i] = eigenvalue i / the sum
    of all F eigenvalues (the share of the total variance). Any 1 <= k <= F. A component's sign is
    arbitrary: the checker flips each to agree with embed.pca_fit's before comparing.
    """
    raise NotImplementedError("pca_fit (Sec. IV-B)")
