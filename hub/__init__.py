"""The Hub side of the detector: save, describe, push and pull models.

- `hub/space.py`: the Space's README header (SpaceCardData); model cards are the core's (`deepfake_detector.card`).
- `hub/push.py`: push a model folder or the Space in one commit (`python -m hub push ...`, `push-space`).
- `python -m hub pull`: where the app's models resolve (the Hub, else the cache, else models/), through the
  core's `deepfake_detector.registry`; models/models.json lists them.

Run `python -m hub --help` for the command line. Nothing is imported here, so `import hub.space` stays cheap.
"""
