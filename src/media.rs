//! Destinations: the only place that decides whether a drive is present (mounted, the right filesystem, writable).
