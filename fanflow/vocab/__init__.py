"""The shared vocabulary: small leaf modules that every layer may import and that import no
other part of fanflow (task states and events, artifact manifest keys, ``module:object``
imports, durations and sizes)."""
