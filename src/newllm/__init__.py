"""new-llm: CVFP (Context Vector Fixed-Point) language models, trained by a DVC pipeline."""
__version__ = "0.1.0"
