"""A procedural toy world for CPU experiments: captioned clips of one coloured shape moving on a torus.

- :mod:`.world`: the vocabulary, caption parsing and the renderer (:func:`.world.render_clip`,
  :func:`.world.sample_clip`).
- :mod:`.evaluate`: a deterministic analyser and scorer of (generated) toy videos.
"""
