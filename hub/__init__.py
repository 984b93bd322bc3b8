"""The Hub side of the detector: save, describe, push and pull models.

- `hub/card.py`: model cards and the Space header (pure functions, dict in, markdown out).
- `hub/push.py`: push a model folder or the Space in one commit (`python -m hub push ...`, `push-space`).
- `python -m hub pull`: where the app's models resolve (the Hub, else the cache, else models/), through the
  core's `deepfake_detector.registry`; models/models.json lists them.

Run `python -m hub --help` for the command line. Nothing is imported here, so `import hub.card` stays cheap.
"""
