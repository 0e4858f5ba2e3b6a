"""Principia core: audit which principles an annotator of pairwise preference data rewards.

Everything here is plain Python over pandas DataFrames and dataclasses; nothing imports Streamlit.
"""

__version__ = "0.1.0"
