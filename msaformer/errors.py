"""The package's exception types: one base class, so callers can catch everything msaformer raises."""


class MsaformerError(Exception):
    """Base class of every error msaformer raises for bad user input or configuration.

    Messages are one line that names the file / record / option at fault and what was found.
    """


class AlignmentError(MsaformerError):
    """An alignment file that cannot be read: empty, malformed, ragged or of an unknown format."""


class ShardError(MsaformerError):
    """An HDF5 shard or shard directory that is missing, incomplete or of an unsupported version."""


class ConfigError(MsaformerError):
    """A configuration file or override that is invalid."""


class CheckpointError(MsaformerError):
    """A model checkpoint file that is missing, of another format, or does not match its configuration."""
