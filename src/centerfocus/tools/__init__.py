"""Tooling around the CenterFocus model: tokenizer building, data, training, export, CLI.

Never imported by the four model files (they must stay loadable as Hub remote code)."""
