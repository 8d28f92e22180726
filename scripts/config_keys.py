# SPDX-License-Identifier: Apache-2.0
"""Shared by scripts/test-docs.py and scripts/check-kubernetes.py."""


def config_keys(tree, prefix=""):
    """The dotted keys of an effective configuration (`brokerha-server --check-config` output,
    parsed); data maps (bus sizes, API users) are leaves."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("subscription_size", "user"):
            yield from config_keys(value, path + ".")
        else:
            yield path
