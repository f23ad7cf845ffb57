"""Small infrastructure shared by every layer: atomic files, content hashes, console logging, formatting.

Imports no torch, timm or ray.
"""
