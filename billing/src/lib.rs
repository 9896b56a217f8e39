//! Offpeak billing: facts in, bills out. Knows nothing of Kubernetes.
