"""Names on Kubernetes and Argo: DNS labels for objects, label values, Argo's task and
template names, and the limits each must fit.

Kubernetes names pods after Argo's templates without lower-casing them, and refuses pods
whose names are not lower-case DNS names; so every Argo name fanflow writes is lower case.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote

ARGO_NAME_LIMIT = 128  # Argo's templates, tasks and steps (workflow/validate/validate.go)
LABEL_LIMIT = 63  # a Kubernetes label value, and a DNS-1123 label


def dns_name(text: str, limit: int = LABEL_LIMIT) -> str:
    """A DNS-1123 label made from ``text`` (lower case, letters, digits and '-'); a name cut
    to fit ``limit`` ends with a short hash of the whole, so that different names stay apart."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    if not name[0].isalpha():
        name = "x-" + name
    if len(name) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:6]
        name = name[: limit - 7].rstrip("-") + "-" + digest
    return name


def label_value(text: str) -> str:
    """A Kubernetes label value made from ``text`` (letters, digits, '-', '_' and '.')."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    return value[:LABEL_LIMIT].rstrip("-_.")


def argo_name(step: str) -> str:
    """A fanflow step name as an Argo task or template name: lower case, letters, digits and
    '-' ('_' and a sub-workflow's '/' become '-'), starting with a letter."""
    text = re.sub(r"[^a-z0-9-]", "-", step.lower())
    return text if text[0].isalpha() else "s" + text


def file_key(name: str) -> str:
    """A task or step name as one path segment of a file or object name (reversible); '[' and
    ']' are encoded too, as fsspec reads them as a glob pattern."""
    return quote(name, safe="=,+@-_.")
