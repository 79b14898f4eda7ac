"""Weight-free classical baselines from OpenCV: Telea's fast marching and Navier–Stokes inpainting."""
from __future__ import annotations

from typing import Any

import numpy as np

from baselines.base import InpaintingMethod, MethodOption, register_method


class OpenCVInpaint(InpaintingMethod):
    """``cv2.inpaint`` with a fixed radius; deterministic (the seed is unused)."""

    def __init__(self, algorithm: str = "telea", radius: int = 3) -> None:
        import cv2  # here, not at module level: registering the methods stays cheap for `misato --help`

        flags = {"telea": cv2.INPAINT_TELEA, "navier-stokes": cv2.INPAINT_NS}
        self.name = algorithm
        self.flag = flags[algorithm]
        self.radius = int(radius)

    def inpaint_one(self, image: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
        import cv2

        hole = mask.astype(np.uint8) * 255
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        filled = cv2.inpaint(bgr, hole, self.radius, self.flag)
        return cv2.cvtColor(filled, cv2.COLOR_BGR2RGB)

    def describe(self) -> dict[str, Any]:
        import cv2

        return {"method": self.name, "radius": self.radius, "opencv": cv2.__version__}


RADIUS = MethodOption("radius", int, "neighbourhood radius in pixels (cv2.inpaint's inpaintRadius)", default=3,
                      bounds=(1, 100))
register_method("telea", lambda **options: OpenCVInpaint("telea", **options), options=(RADIUS,),
                description="OpenCV fast marching (Telea 2004); no weights")
register_method("navier-stokes", lambda **options: OpenCVInpaint("navier-stokes", **options), options=(RADIUS,),
                description="OpenCV Navier-Stokes (Bertalmio et al. 2001); no weights")
