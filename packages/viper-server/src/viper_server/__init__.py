"""Viper server: one headless Chromium per microVM behind REST, events and a DevTools proxy."""

__version__ = "0.1.0"
