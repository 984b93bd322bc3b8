"""The core every part of the detector stands on: the app (app.py), training (train/) and the Hub (hub/).

It imports nothing from those three; they import it. Each module owns one thing (see the README's Layout):
images and labels, the models and their saved layout, inference and verdicts, faces, explanations, video
frames, input checks and what the app draws, the run's figures (model card). Nothing is imported here, so
`import deepfake_detector.images` stays cheap.
"""
