"""The project's web app: pages served by Starlette + uvicorn, with WebSockets for live data.

* ``habc.web.console``: the operator console, the page for the person at the robot (and at the
  simulator): live camera views, take over and hand back, teleop, outcome labels
  (docs/console.md).
* ``habc.web.server_common``: what every page of the app shares: the bind address rules, access
  tokens, Host/Origin checks, and a uvicorn server in a background thread.

Nothing here imports TensorFlow: the console runs inside the environment worker processes, which
render with MuJoCo (habc.run.rollout).
"""
