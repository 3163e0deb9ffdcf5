"""Where runs and their outputs are kept: the artifact store and the run store."""
