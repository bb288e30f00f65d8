"""Data: ``shard`` writes the tars, ``catalog`` reads their index, ``loader.build_loader`` picks
``dali`` or ``fallback`` to turn them into batches. Importing the package imports none of them, so
``cyclegan-shard`` and the loader workers load only the modules they use."""
