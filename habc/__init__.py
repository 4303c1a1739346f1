"""habc: Hierarchical Advantage-Weighted Behaviour Cloning for VLA robot policies."""

import os

# MuJoCo picks its OpenGL back-end when it is first imported. Software rendering through OSMesa
# works on any machine (EGL needs a GPU driver); set MUJOCO_GL yourself to choose another.
os.environ.setdefault('MUJOCO_GL', 'osmesa')
if os.environ['MUJOCO_GL'] == 'osmesa':
  os.environ.setdefault('PYOPENGL_PLATFORM', 'osmesa')
