"""Viper's wire protocol: the models, errors and converter shared by server, agent and CLI."""

from viper_protocol.converter import converter, format_validation_error, make_converter
from viper_protocol.errors import ErrorBody, ViperError

__version__ = "0.1.0"

__all__ = [
    "ErrorBody",
    "ViperError",
    "__version__",
    "converter",
    "format_validation_error",
    "make_converter",
]
