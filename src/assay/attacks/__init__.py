"""Batched adversarial attacks (CPU-friendly PyTorch; Square needs only a numpy predict function).

White-box, on a ``torch.nn.Module`` returning logits, inputs (N, ...) in [0, 1], int64 labels:
:func:`fgsm`, :func:`pgd` (L∞ / L2, random start, restarts), :func:`apgd` (APGD-CE and APGD-T,
Croce & Hein 2020). Black-box: :func:`square` (Andriushchenko et al. 2020), any ``predict(x) -> logits``.

Every attack returns points within eps of the input in the stated norm and inside [0, 1], takes
gradients with respect to the inputs only, leaves the module's mode alone, and draws its randomness
from a local generator seeded by ``seed``.
"""

from assay.attacks.apgd import APGD_LOSSES, apgd
from assay.attacks.common import NORMS, dlr_loss, dlr_targeted_loss, margin, project
from assay.attacks.gradient import fgsm, pgd
from assay.attacks.square import square

__all__ = ["APGD_LOSSES", "NORMS", "apgd", "dlr_loss", "dlr_targeted_loss", "fgsm", "margin", "pgd", "project",
           "square"]
