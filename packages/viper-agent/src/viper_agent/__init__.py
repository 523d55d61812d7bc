"""Viper agent: drives headless Chromium over typed CDP inside each browser VM."""

__version__ = "0.1.0"
