"""The command line as text and values: the switches and their table, the Request a line reads
into and its canonical text, the prompt's grammar and the Prompt it reads into, the samplers.

Pure: no torch, no files, no settings. `parse(request.to_command()) == request`.
"""
