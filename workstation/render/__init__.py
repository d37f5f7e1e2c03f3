"""VTK pipelines that follow the model (MPR, thick-slab MIP); no Qt imports here."""
