"""viper: command line and interactive shell for a Viper server."""

__version__ = "0.1.0"
