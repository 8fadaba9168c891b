"""The OpenGL backend for MuJoCo's offscreen rendering, chosen before ``mujoco`` is imported.

``MUJOCO_GL=osmesa`` makes ``import mujoco`` itself fail (AttributeError inside PyOpenGL) on
a machine without Debian's ``libosmesa6``. Entry points call :func:`choose_gl_backend` first:
it keeps a backend the user set, picks ``osmesa`` where the library is installed and
otherwise disables rendering, so that training runs (and only the videos are skipped).
"""

from __future__ import annotations

import ctypes.util
import os


def choose_gl_backend() -> str:
    """Sets ``MUJOCO_GL`` unless the user did; returns the backend in effect."""
    if "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = "osmesa" if ctypes.util.find_library("OSMesa") else "disable"
    return os.environ["MUJOCO_GL"]


_OFF = ("disable", "disabled", "off", "false", "0")


def rendering_available() -> bool:
    """False where ``MUJOCO_GL`` turns MuJoCo's OpenGL rendering off."""
    return os.environ.get("MUJOCO_GL", "").lower().strip() not in _OFF
