"""Hugging Face transformers glue for FlashCore: the only package that imports transformers."""
# flashcore first: on a machine without CUDA it must switch Triton to its interpreter before transformers
# (which imports triton) is loaded.
import flashcore  # noqa: F401
