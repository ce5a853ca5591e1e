"""Everything the program writes: image files, their PNG metadata, logs, grids, intermediates;
and `!fetch`, which reads a picture's command back.

One concern per module:
- names.py: the `--fnformat` template, prefixes, grid and intermediates names, safe names;
- folder.py: OutputFolder (prefixes under lock, saving pictures and grids, the logs);
- metadata.py: the `Dream`, `sd-metadata` and `parameters` chunks written with each picture;
- intermediates.py: step dumps and the strip of previews;
- readback.py: a PNG's chunks back into our canonical command (`read_command`);
- foreign.py: each metadata format (ours, InvokeAI's) into a command;
- a1111.py: AUTOMATIC1111's `parameters` into a command and notes on what it cannot carry;
- canonical.py: untrusted text through the line parser into a canonical line.
Atomic writes and locks live in invoke.atomic. Outputs write what they are given: they import
the command language, never settings.
"""

from invoke.outputs.folder import (
    DEFAULT_PNG_COMPRESSION,
    INTERMEDIATES_DIR,
    LOG_MD,
    LOG_TXT,
    PREFIX_COUNTER,
    OutputFolder,
    make_grid,
)
from invoke.outputs.foreign import (
    _FOREIGN_SWITCHES,  # tests check it against the switch table
    INVOKEAI_OUTCROP_CELL,
    _command_from_dream,  # tests read lines with it
    _command_from_sd_metadata,  # tests read sd-metadata with it
)
from invoke.outputs.intermediates import Intermediates
from invoke.outputs.metadata import (
    A1111_SAMPLERS,
    APP_ID,
    APP_VERSION,
    UPSCALE_TYPE,
    a1111_parameters,
    grid_chunks,
    image_hash,
    image_metadata,
    is_file_upscale,
    png_chunks,
    sd_metadata,
)
from invoke.outputs.names import (
    DEFAULT_FNFORMAT,
    MAX_NAME_BYTES,
    check_fnformat,
    file_seed,
    format_file_name,
    grid_name,
    sanitize_file_name,
)
from invoke.outputs.readback import (
    MAX_CHUNK_BYTES,
    METADATA_KEYS,
    dropped_note,
    fetched_command,
    read_chunks,
    read_command,
    read_command_and_notes,
    without_user_choices,
)

__all__ = [
    "A1111_SAMPLERS",
    "APP_ID",
    "APP_VERSION",
    "DEFAULT_FNFORMAT",
    "DEFAULT_PNG_COMPRESSION",
    "INTERMEDIATES_DIR",
    "INVOKEAI_OUTCROP_CELL",
    "LOG_MD",
    "LOG_TXT",
    "MAX_CHUNK_BYTES",
    "MAX_NAME_BYTES",
    "METADATA_KEYS",
    "PREFIX_COUNTER",
    "UPSCALE_TYPE",
    "_FOREIGN_SWITCHES",
    "Intermediates",
    "OutputFolder",
    "_command_from_dream",
    "_command_from_sd_metadata",
    "a1111_parameters",
    "check_fnformat",
    "dropped_note",
    "fetched_command",
    "file_seed",
    "format_file_name",
    "grid_chunks",
    "grid_name",
    "image_hash",
    "image_metadata",
    "is_file_upscale",
    "make_grid",
    "png_chunks",
    "read_chunks",
    "read_command",
    "read_command_and_notes",
    "sanitize_file_name",
    "sd_metadata",
    "without_user_choices",
]
