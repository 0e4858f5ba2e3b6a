"""Test support code (fixtures, the scripted OpenAI-compatible server). Never imported by the product."""
