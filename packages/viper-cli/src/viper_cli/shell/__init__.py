"""The interactive shell: the same commands as `viper`, with live events and completion."""
