"""The command line: ``fanflow run``, ``validate``, ``graph``, ``runs``, ``show``, ``logs``, ..."""
