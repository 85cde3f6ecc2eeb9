"""The type alias the reference's modules share."""

from __future__ import annotations

import numpy as np

Array = np.ndarray
