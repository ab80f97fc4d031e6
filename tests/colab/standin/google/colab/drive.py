"""`drive.mount` records its mount point instead of mounting Google Drive."""

mounted = []


def mount(mountpoint, force_remount=False, **kwargs):
    mounted.append(mountpoint)
