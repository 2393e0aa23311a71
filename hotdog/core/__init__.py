"""The torch-free core: what the inference service may import (it never imports PyTorch).

``images`` decodes any image a user hands us, ``preprocessing`` is the evaluation preprocessing
in NumPy, ``dataset`` the folder layout of the data, ``artifact`` the metadata a checkpoint and
an exported model carry, ``answers`` the answer for one image (and when it is "unsure"),
``errors`` the one error type for problems a user can fix. Training
code (``hotdog.data``, ``hotdog.models``) builds on these; nothing here imports it.
"""
