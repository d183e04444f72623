#!/usr/bin/env python3
"""Runs the Kubernetes end-to-end suite against the cluster KUBECONFIG names (kind, a cloud
cluster, or the local node of `make k8s-up`), with one line of progress per step.

    KUBECONFIG=... python3 e2e/run.py [pytest args, e.g. -k install]

Environment: KUBECTL, HELM (default: .k8s/bin/ when present, else PATH), CHRONIK_TAG
(image tag, default the workspace version), E2E_NAMESPACE (default chronik-e2e),
E2E_KEEP=1 (leave the release installed afterwards).
"""

import os
import sys
from pathlib import Path

import pytest

here = Path(__file__).resolve().parent
sys.exit(
    pytest.main(
        [str(here), "-v", "-s", "-x", "-p", "no:cacheprovider", "--tb=short"] + sys.argv[1:]
    )
)
