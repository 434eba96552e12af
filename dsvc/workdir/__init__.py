"""The working directory: stat cache and staged state, scanning, checkout."""
